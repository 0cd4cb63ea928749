"""Config layering (defaults < YAML < --set) and errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from components.config import ConfigError, dump_yaml, resolve, to_dict
from pipelines.config import ExperimentConfig


def write(tmp_path, data, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_layering_order(tmp_path):
    f1 = write(tmp_path, {"optim": {"lr": 0.1, "epochs": 3}, "data": {"batch_size": 4}}, "a.yaml")
    f2 = write(tmp_path, {"optim": {"lr": 0.2}}, "b.yaml")
    cfg = resolve(ExperimentConfig, [f1, f2], ["optim.lr=0.5", "model.adapters=[{type: bottleneck, bottleneck: 4}]"])
    assert cfg.optim.lr == 0.5  # CLI wins over both files
    assert cfg.optim.epochs == 3  # first file, untouched by the second
    assert cfg.data.batch_size == 4
    assert cfg.scaling.num_workers == 1  # default
    assert cfg.model.adapters[0].bottleneck == 4 and cfg.model.adapters[0].sites == ["mlp"]


def test_override_into_list_item(tmp_path):
    f = write(tmp_path, {"model": {"adapters": [{"type": "bottleneck", "bottleneck": 8}]}})
    cfg = resolve(ExperimentConfig, [f], ["model.adapters.0.bottleneck=16"])
    assert cfg.model.adapters[0].bottleneck == 16


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["optim.lrr=1"], "optim.lrr"),
        (["optim.lr=fast"], "optim.lr"),
        (["data.batch_size=2.5"], "data.batch_size"),
        (["model.adapters=[{type: nope}]"], "model.adapters.0.type"),
        (["model.adapters=[{type: bottleneck, bottlenek: 3}]"], "model.adapters.0.bottlenek"),
        (["model.backbone.pool=max"], "model.backbone"),
        (["data.train_sampling=random"], "data"),
        (["optim.lr"], "key=value"),
        (["model.adapters.3.bottleneck=1"], "model.adapters.3"),
        (["model.adapters=bottleneck"], "one item is a list too: [bottleneck]"),
    ],
)
def test_errors_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        resolve(ExperimentConfig, [], overrides)
    assert fragment in str(e.value)


def test_unknown_key_in_yaml_file_names_it(tmp_path):
    f = write(tmp_path, {"model": {"backbone": {"familly": "timm_vit"}}})
    with pytest.raises(ConfigError, match="model.backbone.familly"):
        resolve(ExperimentConfig, [f])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = resolve(ExperimentConfig, [], ["model.adapters=[{type: bottleneck, sites: [attn, mlp]}]", "seed=3"])
    saved = write(tmp_path, yaml.safe_load(dump_yaml(cfg)), "resolved.yaml")
    again = resolve(ExperimentConfig, [saved])
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), ("auto", "auto")])
def test_use_gpu_accepts_yaml_booleans(value, expected):
    assert resolve(ExperimentConfig, [], [f"scaling.use_gpu={value}"]).scaling.use_gpu == expected


def test_exponent_floats_as_users_write_them(tmp_path):
    """`--set optim.lr=3e-4` (the CLI's own example) and `lr: 1e-3` in a file are numbers, as in YAML 1.2;
    PyYAML's 1.1 rules alone read them as strings and the run would stop on 'expected a number'."""
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 1e-3\n  weight_decay: 5E-2\n")
    cfg = resolve(ExperimentConfig, [f], ["optim.min_lr_ratio=1e-2"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.min_lr_ratio) == (1e-3, 5e-2, 1e-2)
    assert resolve(ExperimentConfig, [], ["optim.lr=3e-4"]).optim.lr == 3e-4
    # what is not a number stays an error naming the key; an integer field still refuses a float
    with pytest.raises(ConfigError, match="optim.lr"):
        resolve(ExperimentConfig, [], ["optim.lr=3e-4x"])
    with pytest.raises(ConfigError, match="data.batch_size"):
        resolve(ExperimentConfig, [], ["data.batch_size=1e1"])


def test_words_and_text_as_users_type_them(tmp_path):
    """YAML 1.1 read off/on/yes/no as booleans, so `optim.amp=off` (a documented value) was refused; a text
    field takes a number-like name (2024) and a ' #' (not a YAML comment on a command line); boolean fields
    still take the words."""
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  amp: off\n")
    assert resolve(ExperimentConfig, [f]).optim.amp == "off"
    cfg = resolve(ExperimentConfig, [], ["optim.amp=off", "tracking.experiment=2024", "output_dir=runs/mine #1",
                                         "scaling.use_gpu=no", "tracking.enabled=yes"])
    assert (cfg.optim.amp, cfg.tracking.experiment, cfg.output_dir) == ("off", "2024", "runs/mine #1")
    assert cfg.scaling.use_gpu is False and cfg.tracking.enabled is True
    for bad, key in (("optim.lr=.nan", "optim"), ("optim.lr=.inf", "optim"), ("optim.weight_decay=-0.1", "optim")):
        with pytest.raises(ConfigError, match=key):
            resolve(ExperimentConfig, [], [bad])
