"""A recipe's optimiser: no weight decay on biases, norms, gates, scales and embeddings
(``optim.no_decay``), and lr scaled by the global batch (``optim.lr_base_batch``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from components.config import from_dict
from components.engine import optimizer_for, scaled_lr
from components.model import ModelConfig, build_model

TINY_VIT = {"family": "timm_vit", "name": "vit_tiny_patch16_224", "img_size": 32, "num_frames": 2,
            "kwargs": {"patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2}}


def model(finetune: str = "adapters"):
    adapters = [{"type": "mhva", "sites": ["mlp"], "heads": 2, "bottleneck": "0.25x"},
                {"type": "prefix", "sites": ["attn"], "prefix_length": 4, "hidden": "0.5x", "zero_init_gate": True}]
    cfg = from_dict(ModelConfig, {"backbone": TINY_VIT, "finetune": finetune, "adapters": adapters})
    return build_model(cfg, 3)


def decay_by_name(m, optimizer) -> dict[str, float]:
    ids = {id(p): n for n, p in m.named_parameters()}
    return {ids[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("finetune", ["adapters", "full"])
def test_no_decay_spares_biases_norms_gates_scales_and_embeddings(finetune):
    m = model(finetune)
    optim = SimpleNamespace(lr=1e-3, lr_base_batch=0, weight_decay=0.05, no_decay=True)
    decay = decay_by_name(m, optimizer_for(m, optim, 8)[0])
    assert set(decay) == {n for n, p in m.named_parameters() if p.requires_grad}  # every trainable one, once
    spared = {n for n, wd in decay.items() if wd == 0.0}
    decayed = {n for n, wd in decay.items() if wd == 0.05}
    assert any(n.endswith("down_bias") for n in spared) and any(n.endswith("up_bias") for n in spared)  # MHVA's 2-d biases
    assert any(n.endswith(".gate") for n in spared) and any(n.endswith(".scale") for n in spared)
    assert any(n.endswith("prefix.embedding.weight") for n in spared)
    assert any(n.endswith("down_weight") for n in decayed) and any(n.startswith("head") for n in decayed)
    if finetune == "full":
        assert any(n.endswith("pos_embed") for n in spared) and any(n.endswith("cls_token") for n in spared)
        assert any(n.endswith("norm1.weight") for n in spared) and any(n.endswith("qkv.weight") for n in decayed)
    off = decay_by_name(m, optimizer_for(m, SimpleNamespace(**{**vars(optim), "no_decay": False}), 8)[0])
    assert set(off.values()) == {0.05}  # the default: decay on everything, as before


def test_lr_follows_the_global_batch():
    assert scaled_lr(1e-3, 72, 256) == pytest.approx(1e-3 * 72 / 256)  # M2-CLIP's code: 36 x 2 GPUs
    assert scaled_lr(1e-3, 72, 0) == 1e-3
    m = model()
    optimizer, lr = optimizer_for(m, SimpleNamespace(lr=1e-3, lr_base_batch=64, weight_decay=0.0, no_decay=False), 16)
    assert lr == pytest.approx(2.5e-4) and all(g["lr"] == pytest.approx(2.5e-4) for g in optimizer.param_groups)
