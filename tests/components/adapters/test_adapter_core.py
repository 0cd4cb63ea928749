"""The adapter contract on the default family: identity at init, only adapters/head train, round trip."""

from __future__ import annotations

import pytest
import torch

from components.checkpoint import load_weights, save_weights, trainable_state_dict
from components.config import ConfigError, from_dict, to_dict
from components.model import ModelConfig, build_model, parameter_counts
from tests.conftest import TINY_VIT


def make(adapters, **extra):
    cfg = from_dict(ModelConfig, {"backbone": TINY_VIT, "adapters": adapters, **extra})
    torch.manual_seed(0)
    return cfg, build_model(cfg, 5)


def clip(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 4, 32, 32, 3), dtype=torch.uint8, generator=g)


def frozen_features(model, video):
    """The backbone's output with every adapter bypassed (the frozen model)."""
    from components.adapters.wrapper import AdaptedModule

    saved = {}
    for m in model.modules():
        if isinstance(m, AdaptedModule):
            saved[m] = m.adapters
            m.adapters = torch.nn.ModuleDict()
    try:
        return model.features(video)
    finally:
        for m, a in saved.items():
            m.adapters = a


ADAPTERS = [{"type": "bottleneck", "sites": ["attn", "mlp"], "bottleneck": 8}]


def test_identity_at_init():
    _, model = make(ADAPTERS)
    model.eval()
    video = clip()
    with torch.no_grad():
        assert torch.equal(model.features(video), frozen_features(model, video))


def test_only_adapter_and_head_weights_change():
    _, model = make(ADAPTERS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        out = model({"video": clip(), "target": torch.tensor([1, 3])})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert all(".adapters." in k or k.startswith("head.") for k in changed), changed
    assert any("up.weight" in k for k in changed)  # the zero-init projection left zero


def test_trainable_weights_round_trip(tmp_path):
    cfg, model = make(ADAPTERS)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    path = tmp_path / "w.safetensors"
    save_weights(path, trainable_state_dict(model), to_dict(cfg))
    torch.manual_seed(0)  # a fresh model: the same (random stand-in for pretrained) backbone, untrained adapters
    fresh = build_model(cfg, 5).eval()
    video = clip()
    with torch.no_grad():
        assert not torch.equal(model.predict(video), fresh.predict(video))
        load_weights(fresh, path, to_dict(cfg))
        assert torch.equal(model.predict(video), fresh.predict(video))
    assert all(".adapters." in k or k.startswith("head.") for k in trainable_state_dict(model))


def test_loading_into_a_different_config_says_what_differs(tmp_path):
    cfg, model = make(ADAPTERS)
    path = tmp_path / "w.safetensors"
    save_weights(path, trainable_state_dict(model), to_dict(cfg))
    other_cfg, other = make([{"type": "bottleneck", "sites": ["attn", "mlp"], "bottleneck": 4}])
    with pytest.raises(ValueError, match="adapters"):
        load_weights(other, path, to_dict(other_cfg))


def test_parameter_counts_and_linear_probe():
    _, model = make(ADAPTERS)
    counts = parameter_counts(model)
    expected = sum(p.numel() for n, p in model.named_parameters() if ".adapters." in n or n.startswith("head."))
    assert counts["trainable_params"] == expected
    assert 0 < counts["trainable_pct"] < 100
    _, probe = make([], finetune="linear")
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {"head.1.weight", "head.1.bias"}
    # the papers' column leaves the head out (what a campaign's table reports for each variant)
    pct, with_head = {}, {}
    for name, m in (("adapters", model), ("linear", probe)):
        c = parameter_counts(m)
        pct[name], with_head[name] = c["trainable_pct"], c["trainable_pct_with_head"]
    assert pct["linear"] == 0 < pct["adapters"]
    assert 0 < with_head["linear"] < with_head["adapters"] and with_head["adapters"] > pct["adapters"]
    with pytest.raises(ConfigError):
        make(ADAPTERS, finetune="linear")


def test_unknown_site_is_a_config_error():
    with pytest.raises(ConfigError, match="no site 'qkv'"):
        make([{"type": "bottleneck", "sites": ["qkv"]}])
