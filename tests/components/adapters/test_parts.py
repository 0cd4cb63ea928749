"""Parts of an adapter that train (``train_only`` / ``freeze``): CM3T's fusion stage (Sec. 3.2) trains
only the AdapterFusion weights, with the CAAs (and MHVA + PT) loaded from the previous stage."""

from __future__ import annotations

import pytest
import torch

from components.checkpoint import save_weights, trainable_state_dict
from components.config import ConfigError, from_dict, to_dict
from components.model import ModelConfig, build_model
from tests.conftest import TINY_VIT

MHVA = {"type": "mhva", "heads": 4, "bottleneck": 8}
CAA = {"type": "caa", "modalities": ["audio", "flow"], "bottleneck": 8, "share_down_with": "mhva"}
BATCH = {"video": torch.randint(0, 256, (4, 4, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
         "side_audio": torch.randn(4, 6), "side_flow": torch.randn(4, 5), "target": torch.tensor([0, 1, 2, 0])}


def make(adapters, seed=0):
    cfg = from_dict(ModelConfig, {"backbone": TINY_VIT, "adapters": adapters,
                                  "modalities": [{"name": "audio", "dim": 6}, {"name": "flow", "dim": 5}]})
    torch.manual_seed(seed)
    return cfg, build_model(cfg, 3)


def train_steps(model, steps=3):
    """A few AdamW steps on every parameter that requires grad; the names whose values changed."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(BATCH)["loss"].backward()
        opt.step()
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def test_the_fusion_stage_trains_only_the_fusion_weights(tmp_path):
    # stage 2: the CAAs train with their fusion held at its init; MHVA + PT would be frozen here too
    cfg2, stage2 = make([MHVA, {**CAA, "freeze": ["fusion"]}])
    changed2 = train_steps(stage2)
    assert any(".adapters.caa.keys." in n for n in changed2) and any(".adapters.caa.up." in n for n in changed2)
    assert not any(".adapters.caa.fusion." in n for n in changed2)
    run = tmp_path / "stage2"
    run.mkdir()
    save_weights(run / "weights.safetensors", trainable_state_dict(stage2), to_dict(cfg2))
    # stage 3: everything loaded from stage 2, only the fusion (and the head) trains
    _, stage3 = make([{**MHVA, "init_from": str(run), "trainable": False},
                      {**CAA, "init_from": str(run), "train_only": ["fusion"]}], seed=5)
    loaded = stage2.state_dict()
    for k, v in stage3.state_dict().items():
        if ".adapters." in k:
            assert torch.equal(v, loaded[k]), k
    trainable = {n for n, p in stage3.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters.caa.fusion." in n or n.startswith("head.") for n in trainable)
    changed3 = train_steps(stage3)
    fusion = {n for n in changed3 if ".adapters.caa.fusion." in n}
    assert fusion and {n.rsplit(".adapters.caa.fusion.", 1)[1] for n in fusion} >= {"query.weight", "key.weight", "value.weight"}
    assert changed3 - fusion == {n for n in changed3 if n.startswith("head.")}  # nothing else moved


def test_a_part_by_parameter_name_and_errors():
    _, model = make([MHVA, {**CAA, "train_only": ["fusion.query", "scale"]}])
    trainable = {n.split(".adapters.caa.", 1)[1] for n, p in model.named_parameters()
                 if p.requires_grad and ".adapters.caa." in n}
    assert trainable == {"fusion.query.weight", "fusion.query.bias", "scale"}
    with pytest.raises(ConfigError, match=r"model\.adapters\.1\.train_only: 'fuson' names no parameter .*'fusion'"):
        make([MHVA, {**CAA, "train_only": ["fuson"]}])
    with pytest.raises(ConfigError, match=r"model\.adapters\.1: \['fusion'\] is both in train_only and in freeze"):
        make([MHVA, {**CAA, "train_only": ["fusion"], "freeze": ["fusion.key"]}])
    with pytest.raises(ConfigError, match=r"model\.adapters\.0: train_only/freeze .*trainable: false"):
        make([{**MHVA, "trainable": False, "freeze": ["up_weight"]}])
