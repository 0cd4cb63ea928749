"""Weights files that do not fit fail loudly; ``init_from`` and staged training (``trainable: false``)."""

from __future__ import annotations

import pytest
import torch

from components.checkpoint import load_weights, save_weights, trainable_state_dict
from components.config import ConfigError, from_dict, to_dict
from components.model import ModelConfig, build_model
from tests.conftest import TINY_VIT

MHVA = {"type": "mhva", "heads": 4, "bottleneck": 8}
CAA = {"type": "caa", "modalities": ["audio"], "bottleneck": 8, "share_down_with": "mhva"}


def make(adapters, seed=0, **extra):
    cfg = from_dict(ModelConfig, {"backbone": TINY_VIT, "adapters": adapters,
                                  "modalities": [{"name": "audio", "dim": 6}], **extra})
    torch.manual_seed(seed)
    return cfg, build_model(cfg, 3)


def trained(tmp_path, adapters, name="run"):
    """A 'previous run': adapters moved away from init, saved like the train loop does."""
    cfg, model = make(adapters)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    run = tmp_path / name
    run.mkdir()
    save_weights(run / "weights.safetensors", trainable_state_dict(model), to_dict(cfg))
    return cfg, model, run


def test_load_for_a_different_config_names_the_keys_that_differ(tmp_path):
    cfg, model, run = trained(tmp_path, [MHVA])
    other_cfg, other = make([{**MHVA, "bottleneck": 4}])
    with pytest.raises(ValueError, match=r"adapters\.0\.bottleneck: checkpoint 8 vs current 4"):
        load_weights(other, run / "weights.safetensors", model_config=to_dict(other_cfg))


def test_backbone_checkpoint_path_is_not_a_difference(tmp_path):
    cfg, model, run = trained(tmp_path, [MHVA])
    moved = to_dict(cfg)
    moved["backbone"]["checkpoint"] = "/elsewhere/vit.safetensors"
    assert load_weights(make([MHVA])[1], run / "weights.safetensors", model_config=moved)


def test_missing_and_mismatched_tensors_are_listed(tmp_path):
    cfg, model, run = trained(tmp_path, [MHVA])
    state = trainable_state_dict(model)
    dropped = dict(state)
    dropped.pop(next(k for k in state if ".adapters.mhva.up_weight" in k))
    save_weights(tmp_path / "partial.safetensors", dropped, to_dict(cfg))
    with pytest.raises(ValueError, match=r"missing 1 key"):
        load_weights(make([MHVA])[1], tmp_path / "partial.safetensors", model_config=to_dict(cfg))
    # no config in the file: the tensors themselves are checked
    save_weights(tmp_path / "bare.safetensors", state)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_weights(make([{**MHVA, "bottleneck": 4}])[1], tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="unexpected"):
        load_weights(make([])[1], tmp_path / "bare.safetensors")  # adapters this model does not have


def test_init_from_a_previous_run_and_staged_training(tmp_path):
    _, first, run = trained(tmp_path, [MHVA])
    # stage 2: MHVA initialised from stage 1 (by run directory) and frozen, only the new CAA trains
    cfg, model = make([{**MHVA, "init_from": str(run), "trainable": False}, CAA], seed=7)
    mhva = {k: v for k, v in model.state_dict().items() if ".adapters.mhva." in k}
    source = first.state_dict()  # keys differ by ".base_layer": the CAA now wraps the whole block
    assert mhva and all(torch.equal(v, source[k.replace(".base_layer.", ".")]) for k, v in mhva.items())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters.caa." in n or n.startswith("head.") for n in trainable)
    before = {k: v.clone() for k, v in mhva.items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = {"video": torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8),
             "side_audio": torch.randn(2, 6), "target": torch.tensor([0, 1])}
    for _ in range(2):
        opt.zero_grad()
        model(batch)["loss"].backward()
        opt.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # frozen, though shared


def test_init_from_errors(tmp_path):
    _, _, run = trained(tmp_path, [MHVA])
    with pytest.raises(ConfigError, match=r"adapters\.1\.init_from: .*no weights for adapter 'caa'.*\['mhva'\]"):
        make([MHVA, {**CAA, "init_from": str(run / "weights.safetensors")}])
    with pytest.raises(ConfigError, match="shape mismatch"):
        make([{**MHVA, "bottleneck": 4, "init_from": str(run)}])
    with pytest.raises(ConfigError, match="missing"):
        make([{**MHVA, "sites": ["mlp", "attn"], "init_from": str(run)}])
    with pytest.raises(ConfigError, match="not found"):
        make([{**MHVA, "init_from": str(tmp_path / "nowhere")}])
