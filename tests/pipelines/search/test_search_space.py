"""Search spaces as YAML: every key checked against the experiment config before a trial starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import ConfigError, resolve, to_dict
from pipelines.config import ExperimentConfig
from pipelines.search.space import apply_params, load_space, validate
from pipelines.search.tune import check_search, for_training

ROOT = Path(__file__).resolve().parents[3]
PRESETS = ROOT / "pipelines" / "configs" / "presets"
DEMO = ROOT / "pipelines" / "configs" / "demo.yaml"

# Each shipped space and the configs it is written for (its header says so).
SHIPPED = [
    ("cm3t.yaml", [PRESETS / "cm3t" / "mhva_pt.yaml"]),
    ("adaptformer_pt.yaml", [PRESETS / "cm3t" / "adaptformer_pt.yaml"]),
    ("m2clip.yaml", [PRESETS / "m2clip" / "m2clip_full.yaml"]),
    ("full_ft.yaml", [PRESETS / "cm3t" / "full_ft.yaml"]),
    ("full_ft.yaml", [PRESETS / "cm3t" / "linear_probe.yaml"]),
    ("demo.yaml", [DEMO]),
    ("demo_adapters.yaml", [DEMO.parent / "demo" / "target.yaml", DEMO.parent / "demo" / "adapters_frames.yaml"]),
]


def base(*files) -> dict:
    return to_dict(resolve(ExperimentConfig, list(files)))


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("space_file, configs", SHIPPED, ids=[f"{s}-{c[0].stem}" for s, c in SHIPPED])
def test_shipped_spaces_fit_their_presets(space_file, configs):
    space = load_space(ROOT / "tune_spaces" / space_file)
    validate(space, base(*configs), where=space_file)
    assert set(space.to_tune()) == set(space.params)


def test_every_shipped_space_is_listed():
    assert {p.name for p in (ROOT / "tune_spaces").glob("*.yaml")} == {s for s, _ in SHIPPED}


@pytest.mark.parametrize("params, words", [
    ("optim.lrr: {type: loguniform, lower: 1.0e-4, upper: 1.0e-2}", ["optim.lrr"]),
    ("model.adapters.7.bottleneck: {type: choice, values: [8]}", ["model.adapters.7", "2 item(s)"]),
    ("model.adapters.0.heads: {type: choice, values: [2, 4]}", ["model.adapters.0.heads"]),  # a bottleneck has no heads
    ("model.adapters.0.bottleneck: {type: choice, values: [16, big]}", ["model.adapters.0.bottleneck", "'big'"]),
    ("optim.epochs: {type: randint, lower: -2, upper: 3}", ["optim.epochs", "-2"]),  # epochs must be positive
])
def test_a_key_or_value_the_config_rejects_stops_the_search(tmp_path, params, words):
    path = write(tmp_path, f"params:\n  {params}\n")
    with pytest.raises(ConfigError) as e:
        validate(load_space(path), base(DEMO), where=str(path))
    for w in [str(path), *words]:
        assert w in str(e.value)


@pytest.mark.parametrize("spec, words", [
    ("{type: normal, lower: 0, upper: 1}", ["type", "normal"]),
    ("{type: uniform, lower: 0.5}", ["upper"]),
    ("{type: loguniform, lower: 0.0, upper: 1.0}", ["lower > 0"]),
    ("{type: loguniform, lower: 1e-4x, upper: 1.0e-2}", ["'1e-4x'"]),  # not a number (1e-4 is: YAML 1.2)
    ("{type: randint, lower: 1.5, upper: 4}", ["integer"]),
    ("{type: choice, values: []}", ["values"]),
    ("{type: choice, value: [1, 2]}", ["value"]),  # typo'd field
])
def test_malformed_distributions_name_the_file_and_key(tmp_path, spec, words):
    path = write(tmp_path, f"params:\n  optim.lr: {spec}\n")
    with pytest.raises(ConfigError) as e:
        load_space(path)
    for w in [str(path), "params.optim.lr", *words]:
        assert w in str(e.value)


def test_yaml_maps_to_tune_domains_and_back(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer

    path = write(tmp_path, """
metric: val_loss
mode: min
params:
  optim.lr: {type: loguniform, lower: 1e-4, upper: 1.0e-2}
  optim.weight_decay: {type: uniform, lower: 0.0, upper: 0.1}
  optim.epochs: {type: randint, lower: 1, upper: 4}
  model.adapters.0.bottleneck: {type: choice, values: [8, 16]}
  model.adapters.0.layers: {type: choice, values: [[], [0, 1]]}
  seed: {type: grid, values: [0, 1]}
""")
    space = load_space(path)
    validate(space, base(DEMO))
    domains = space.to_tune()
    lrs = sorted(domains["optim.lr"].sample(size=2001, random_state=0))
    assert isinstance(domains["optim.lr"], Float) and 5e-4 < lrs[1000] < 2e-3  # log-uniform: median ~1e-3
    assert isinstance(domains["optim.weight_decay"], Float)
    assert isinstance(domains["optim.epochs"], Integer) and domains["optim.epochs"].upper == 4
    assert isinstance(domains["model.adapters.0.bottleneck"], Categorical)
    assert domains["seed"] == {"grid_search": [0, 1]}
    # list-valued choices reach searchers as strings (Optuna takes scalar categories only) and come back as lists
    assert all(isinstance(c, str) for c in domains["model.adapters.0.layers"].categories)
    sampled = {k: (v.sample() if hasattr(v, "sample") else v["grid_search"][1]) for k, v in domains.items()}
    decoded = space.decode(sampled)
    assert decoded["model.adapters.0.layers"] in ([], [0, 1]) and decoded["seed"] == 1
    cfg = resolve(ExperimentConfig, base=apply_params(base(DEMO), decoded))
    assert cfg.optim.lr == sampled["optim.lr"] and 1 <= cfg.optim.epochs <= 3


def test_apply_params_leaves_the_base_alone():
    data = base(DEMO)
    out = apply_params(data, {"model.adapters.1.bottleneck": 4, "optim.lr": 1e-5})
    assert out["model"]["adapters"][1]["bottleneck"] == 4 and out["optim"]["lr"] == 1e-5
    assert data["model"]["adapters"][1]["bottleneck"] == 16 and data["optim"]["lr"] != 1e-5


def test_optuna_samples_but_does_not_enumerate_grids(tmp_path):
    space = load_space(write(tmp_path, "params:\n  seed: {type: grid, values: [0, 1]}\n"))
    with pytest.raises(ConfigError, match="--search random"):
        check_search("optuna", space, "space.yaml")
    check_search("random", space, "space.yaml")


def test_best_config_is_a_plain_training_config():
    data = base(DEMO)
    data.update(output_dir="/tmp/search/trials/x")
    data["tracking"].update(parent_run_id="abc", tags={"vidpeft.trial_id": "x"})
    out = for_training(data, "demo-best")
    cfg = resolve(ExperimentConfig, base=out)
    assert (cfg.name, cfg.output_dir, cfg.tracking.parent_run_id, cfg.tracking.tags) == ("demo-best", "", "", {})
