"""Cross-attention adapters (CAA + AdapterFusion, and MMCA) with 0, 1 and 2 side modalities.

A modality missing for a sample (mask false, or not in the batch at all) is masked out: the sample's
output equals that of a model configured without the modality (same weights), garbage in the missing
slot (even NaN) changes nothing, and a sample with no modality gets exactly the frozen output.
"""

from __future__ import annotations

import pytest
import torch

from components.adapters.fusion import ModalityFusion
from components.config import ConfigError, from_dict
from components.model import ModelConfig, build_model
from tests.conftest import TINY_VIT

DIMS = {"audio": 6, "flow": 5, "text": 7}


def make(kind: str, modalities: list[str], seed: int = 0, **extra):
    cfg = from_dict(ModelConfig, {
        "backbone": TINY_VIT,
        "modalities": [{"name": n, "dim": DIMS[n]} for n in modalities],
        "adapters": [{"type": kind, "modalities": modalities, "bottleneck": 8, "sites": ["block", "mlp"], **extra}],
    })
    torch.manual_seed(seed)
    model = build_model(cfg, 3).eval()
    with torch.no_grad():  # trained-looking adapters: the zero-init up-projections would hide everything
        for name, p in model.named_parameters():
            if ".adapters." in name:
                p.normal_(std=0.3)
    return model


def video(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 4, 32, 32, 3), dtype=torch.uint8, generator=g)


def logits(model, v, **side):
    batch = {"video": v}
    for name, (feat, mask) in side.items():
        batch[f"side_{name}"] = feat
        if mask is not None:
            batch[f"side_{name}_mask"] = torch.tensor(mask)
    with torch.no_grad():
        return model(batch)["logits"]


def frozen(model, v):
    from tests.components.adapters.test_adapter_matrix import frozen_logits

    with torch.no_grad():
        return frozen_logits(model, {"video": v})


def copy_shared(src, dst):
    """Load into ``dst`` every tensor of ``src`` it has (the modality-specific ones it lacks are skipped)."""
    own = dst.state_dict()
    dst.load_state_dict({k: v for k, v in src.state_dict().items() if k in own}, strict=True)


KINDS = [("caa", {}), ("caa", {"values": "modality"}), ("mmca", {})]


@pytest.mark.parametrize("kind, extra", KINDS)
def test_no_modality_present_gives_the_frozen_output(kind, extra):
    model, v = make(kind, ["audio", "flow"], **extra), video()
    base = frozen(model, v)
    assert torch.equal(logits(model, v), base)  # 0 modalities in the batch
    absent = {"audio": (torch.randn(2, 6), [False, False]), "flow": (torch.full((2, 5), float("nan")), [False, False])}
    assert torch.equal(logits(model, v, **absent), base)  # all masked, NaN garbage in a slot
    present = {"audio": (torch.randn(2, 6), [True, True])}
    assert not torch.allclose(logits(model, v, **present), base)  # 1 modality: the adapter acts


@pytest.mark.parametrize("kind, extra", KINDS)
def test_missing_modality_equals_model_without_it(kind, extra):
    v = video()
    audio, flow = torch.randn(2, 6), torch.randn(2, 5)
    both = make(kind, ["audio", "flow"], **extra)
    only_audio = make(kind, ["audio"], seed=1, **extra)
    copy_shared(both, only_audio)
    # sample 0 has no flow (garbage in its slot), sample 1 has both
    garbage = flow.clone()
    garbage[0] = float("nan")
    out = logits(both, v, audio=(audio, [True, True]), flow=(garbage, [False, True]))
    ref = logits(only_audio, v, audio=(audio, [True, True]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[1], ref[1])  # flow is used where present
    # different garbage, same answer
    other = flow.clone()
    other[0] = 1e6
    torch.testing.assert_close(logits(both, v, audio=(audio, [True, True]), flow=(other, [False, True])), out)
    # a modality absent from the batch altogether == masked for every sample
    torch.testing.assert_close(logits(both, v, audio=(audio, [True, True]))[0], ref[0], rtol=1e-5, atol=1e-6)


def test_modality_values_carry_the_modality_content():
    """values: modality — two clips with the same video but different features get different outputs
    even with one key token (where the paper's form only re-weights video tokens)."""
    model, v = make("caa", ["audio"], values="modality"), video(b=1)
    v2 = v.expand(2, *v.shape[1:]).contiguous()
    out = logits(model, v2, audio=(torch.randn(2, 6), [True, True]))
    assert not torch.allclose(out[0], out[1])


def test_adding_a_modality_is_a_config_entry():
    model = make("caa", ["audio", "flow", "text"])
    out = logits(model, video(), audio=(torch.randn(2, 6), None), text=(torch.randn(2, 7), [True, False]))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    keys = {k.split(".keys.proj.")[1].split(".")[0] for k in model.state_dict() if ".keys.proj." in k}
    assert keys == {"audio", "flow", "text"}


def test_fusion_masks_absent_modalities_out_of_the_softmax():
    torch.manual_seed(0)
    fusion = ModalityFusion(4)
    h, z = torch.randn(2, 3, 4), torch.randn(2, 3, 2, 4)
    present = torch.tensor([[True, False], [False, False]])
    out = fusion(h, z, present)
    torch.testing.assert_close(out[0], fusion.value(z[0, :, 0]))  # only modality 0: probability 1
    assert torch.equal(out[1], torch.zeros(3, 4))  # none present
    out.sum().backward()  # no NaN gradients from masking
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters())


def test_caa_shares_the_mhva_down_projection():
    cfg = from_dict(ModelConfig, {
        "backbone": TINY_VIT,
        "modalities": [{"name": "audio", "dim": 6}],
        "adapters": [
            {"type": "mhva", "heads": 4, "bottleneck": 8},
            {"type": "caa", "modalities": ["audio"], "bottleneck": 8, "share_down_with": "mhva"},
        ],
    })
    model = build_model(cfg, 3)
    caa_params = [n for n, _ in model.named_parameters() if ".adapters.caa." in n]
    assert caa_params and not any("down" in n for n in caa_params)  # no W_down of its own, none duplicated
    out = model({"video": video(), "side_audio": torch.randn(2, 6), "target": torch.tensor([0, 1])})
    out["loss"].backward()


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="not in model.modalities"):
        build_model(from_dict(ModelConfig, {
            "backbone": TINY_VIT, "adapters": [{"type": "caa", "modalities": ["audio"]}]}), 3)
    with pytest.raises(ConfigError, match="no side modality"):
        build_model(from_dict(ModelConfig, {"backbone": TINY_VIT, "adapters": [{"type": "caa"}]}), 3)
    with pytest.raises(ConfigError, match="bottleneck 8"):
        build_model(from_dict(ModelConfig, {
            "backbone": TINY_VIT, "modalities": [{"name": "audio", "dim": 6}],
            "adapters": [{"type": "mhva", "bottleneck": 8},
                         {"type": "caa", "modalities": ["audio"], "bottleneck": 4, "share_down_with": "mhva"}]}), 3)
    with pytest.raises(ValueError, match="expected one adapter named 'nope'"):
        build_model(from_dict(ModelConfig, {
            "backbone": TINY_VIT, "modalities": [{"name": "audio", "dim": 6}],
            "adapters": [{"type": "caa", "modalities": ["audio"], "share_down_with": "nope"}]}), 3)


def test_empty_modalities_means_every_configured_modality():
    cfg = from_dict(ModelConfig, {"backbone": TINY_VIT, "modalities": [{"name": "audio", "dim": 6}, {"name": "text", "dim": 7}],
                                  "adapters": [{"type": "caa", "bottleneck": 8}]})
    names = {k.split(".keys.proj.")[1].split(".")[0] for k in build_model(cfg, 3).state_dict() if ".keys.proj." in k}
    assert names == {"audio", "text"}
