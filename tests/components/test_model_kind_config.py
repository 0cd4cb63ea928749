"""The model config is polymorphic on `model.kind`, and run configs saved the old way still load."""

from __future__ import annotations

import json

import pytest
import yaml

from components.checkpoint import save_weights, trainable_state_dict
from components.config import ConfigError, dump_yaml, explain, from_dict, resolve, to_dict
from components.m2clip import M2ClipConfig, M2ClipModelConfig
from components.model import ModelConfig, build_model
from components.multihead import MultiDatasetModelConfig
from pipelines.config import ExperimentConfig
from pipelines.infer.trained import build_trained, load_trained

# A classifier run's config.yaml as `vidpeft train` wrote it before configs were per kind: every kind's
# sections, the other kinds' at their defaults (model.m2clip, model.heads).
OLD_CLASSIFIER_RUN = """\
name: old-run
output_dir: ''
seed: 0
model:
  kind: classifier
  backbone:
    family: timm_vit
    name: vit_tiny_patch16_224
    checkpoint: null
    img_size: 32
    num_frames: 2
    kwargs:
      depth: 2
      embed_dim: 16
      num_heads: 2
    pool: cls
    pool_grid: 2
    temporal: mean
  adapters:
  - type: bottleneck
    name: ''
    sites:
    - mlp
    layers: []
    init_from: null
    trainable: true
    bottleneck: 4
    scale: 1.0
    learnable_scale: true
    dropout: 0.0
  head:
    task: single_label
    num_outputs: 3
    dropout: 0.0
  modalities: []
  grad_checkpointing: false
  finetune: adapters
  m2clip:
    text_adapters: []
    text_lr_scale: 0.5
    templates:
    - a video of {}
    eval_templates: []
    contrastive: true
    contrastive_weight: 0.5
    cmc: true
    cmc_weight: 0.5
    cmlm: true
    cmlm_weight: 0.1
    cmlm_mask_prob: 0.2
    cmlm_at_least_one: true
    cmlm_adapter_width: 384
    cmlm_vocab: labels
    vc: true
    vc_weight: 1.0
    vc_dropout: 0.5
    eval_head: vc
    text_chunk: 256
  heads: []
"""


def test_kind_selects_the_config_class_and_its_own_keys():
    assert type(from_dict(ModelConfig, {})) is ModelConfig
    m2 = from_dict(ModelConfig, {"kind": "m2clip", "m2clip": {"vc_weight": 2.0}})
    assert type(m2) is M2ClipModelConfig and m2.m2clip.vc_weight == 2.0 and m2.m2clip.cmc_weight == 0.5
    multi = from_dict(ModelConfig, {"kind": "multi_dataset", "heads": [{"name": "a", "num_outputs": 2}]})
    assert type(multi) is MultiDatasetModelConfig and [h.name for h in multi.heads] == ["a"]
    assert "m2clip" not in to_dict(from_dict(ModelConfig, {})) and "heads" not in to_dict(m2)


@pytest.mark.parametrize("overrides, message", [
    (["model.m2clip.vc_weight=2"], r"^model\.m2clip\.\* is only for kind m2clip \(model\.kind is 'classifier'\)$"),
    (["model.kind=m2clip", "model.heads=[]"], r"^model\.heads is only for kind multi_dataset \(model\.kind is 'm2clip'\)$"),
    (["model.kind=nope"], r"^model\.kind: unknown 'nope'; known: \['classifier', 'm2clip', 'multi_dataset'\]$"),
])
def test_a_key_of_another_kind_is_a_one_line_error_naming_key_and_kind(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve(ExperimentConfig, overrides=overrides)


@pytest.mark.parametrize("order", [0, 1])
def test_kind_and_its_keys_on_the_command_line_in_either_order(order):
    sets = ["model.kind=m2clip", "model.m2clip.templates.0=a clip of {}", "model.m2clip.cmlm_weight=0.3"]
    cfg = resolve(ExperimentConfig, overrides=sets if order == 0 else sets[::-1])
    assert type(cfg.model) is M2ClipModelConfig
    assert cfg.model.m2clip.templates == ["a clip of {}"] and cfg.model.m2clip.cmlm_weight == 0.3


def test_yaml_kind_switched_on_the_command_line(tmp_path):
    (tmp_path / "m2.yaml").write_text(yaml.safe_dump({"model": {"kind": "m2clip", "m2clip": {"vc_weight": 2.0}}}))
    assert resolve(ExperimentConfig, [tmp_path / "m2.yaml"]).model.m2clip.vc_weight == 2.0
    with pytest.raises(ConfigError, match=r"model\.m2clip\.\* is only for kind m2clip"):  # the file's m2clip stays
        resolve(ExperimentConfig, [tmp_path / "m2.yaml"], ["model.kind=classifier"])


def test_resolved_configs_of_every_kind_round_trip_through_yaml(tmp_path):
    for kind, extra in [("m2clip", []), ("multi_dataset", ["model.heads=[{name: a, num_outputs: 2}]"])]:
        cfg = resolve(ExperimentConfig, overrides=[f"model.kind={kind}", *extra])
        (tmp_path / "c.yaml").write_text(dump_yaml(cfg))
        assert resolve(ExperimentConfig, [tmp_path / "c.yaml"]) == cfg


def test_explain_lists_each_kinds_own_keys():
    rows = {key: text for key, _, text in explain(ExperimentConfig)}
    assert rows["model.m2clip.cmlm_weight"].startswith("(kind m2clip) ")
    assert rows["model.heads"].startswith("(kind multi_dataset) ")
    assert "model.kind" in rows and "model.backbone.family" in rows


def _old_run(tmp_path, text: str):
    """A run directory written the old way: config.yaml, and weights whose metadata holds the same model section."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(text)
    old_model = yaml.safe_load(text)["model"]
    cfg = from_dict(ModelConfig, {k: v for k, v in old_model.items() if k not in ("m2clip", "heads")})
    model = build_model(cfg, 3)
    save_weights(run / "weights.safetensors", trainable_state_dict(model), old_model)
    (run / "labels.json").write_text(json.dumps({"class_names": ["a", "b", "c"], "target_names": []}))
    return run, model


def test_a_run_saved_with_every_kinds_sections_loads_and_rebuilds(tmp_path):
    run, model = _old_run(tmp_path, OLD_CLASSIFIER_RUN)
    t = load_trained(run)
    assert type(t.cfg.model) is ModelConfig and t.cfg.model.adapters[0].bottleneck == 4
    rebuilt = build_trained(t)  # the weights' embedded (old) model config is checked against it: equal
    state = trainable_state_dict(model)
    assert all((rebuilt.state_dict()[k] == v).all() for k, v in state.items())


def test_an_old_run_whose_other_kind_section_was_changed_is_refused_naming_the_key(tmp_path):
    changed = OLD_CLASSIFIER_RUN.replace("    cmlm_weight: 0.1", "    cmlm_weight: 0.3")
    run, _ = _old_run(tmp_path, changed)
    with pytest.raises(ConfigError, match=r"config\.yaml: model\.m2clip is only for kind m2clip, and this saved "
                                          r"config's kind is classifier"):
        load_trained(run)


def test_an_old_m2clip_config_keeps_its_section_and_drops_the_empty_heads():
    from components.model_config import drop_other_kinds

    old = {"kind": "m2clip", "m2clip": {**to_dict(M2ClipConfig()), "vc_weight": 2.0}, "heads": []}
    assert drop_other_kinds(old, "x") == {"kind": "m2clip", "m2clip": old["m2clip"]}
    old_multi = {"kind": "multi_dataset", "m2clip": {"vc_weight": 1.0}, "heads": [{"name": "a", "num_outputs": 2}]}
    assert "m2clip" not in drop_other_kinds(old_multi, "x")  # a section older than some keys: still the defaults


def test_a_search_started_before_the_kind_split_keeps_its_identity():
    """`vidpeft tune --resume` compares the search's identity: a base config saved with every kind's
    sections at their defaults (the old layout) is the same search as today's classifier config."""
    from components.config import to_dict
    from components.m2clip.config import M2ClipConfig
    from pipelines.config import ExperimentConfig
    from pipelines.run.config_identity import config_identity

    today = to_dict(ExperimentConfig())
    old = to_dict(ExperimentConfig())
    old["model"] = {**old["model"], "m2clip": to_dict(M2ClipConfig()), "heads": []}
    assert config_identity(old) == config_identity(today)
    changed = {**old, "model": {**old["model"], "m2clip": {**old["model"]["m2clip"], "cmc_weight": 2.0}}}
    assert config_identity(changed) != config_identity(today)
