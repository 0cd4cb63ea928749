"""CAA over one-token modalities: parts that only shape attention weights over a single key (weight 1
whatever the scores) are not built, so every parameter that is built gets a gradient (the run's
health check finds no stalled module), and the output is the full attention's on one key.

The reference below is the full computation (W_down, key projections, AdapterFusion's query and key,
softmax over one key / one modality), with the parts this layer does not build filled in at random.
"""

from __future__ import annotations

import re

import pytest
import torch

from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
from components.adapters.caa import CAAConfig, CrossAttentionAdapter
from components.checkpoint import init_adapter_from, load_weights, save_weights, trainable_state_dict
from components.config import from_dict, to_dict
from components.engine.health import GradProbe
from components.model import ModelConfig, build_model
from tests.conftest import TINY_VIT

DIMS = {"audio": 6, "flow": 5}
R, C = 8, 16
# (modalities, values, fusion) -> the parts not built
CASES = {
    "demo": (["audio"], "modality", "adapterfusion"),
    "two_modalities": (["audio", "flow"], "modality", "adapterfusion"),
    "sum": (["audio"], "modality", "sum"),
    "video_values": (["audio"], "video", "adapterfusion"),
    "video_two": (["audio", "flow"], "video", "adapterfusion"),
}
UNBUILT = {
    "demo": {"down.own.0", "keys.proj.audio", "fusion.query", "fusion.key"},
    "two_modalities": {"keys.proj.audio", "keys.proj.flow"},  # the fusion's query reads h: W_down trains
    "sum": {"down.own.0", "keys.proj.audio"},
    "video_values": {"fusion.query", "fusion.key"},  # keys shape the pooling over the video tokens
    "video_two": set(),
}


def model_for(case: str, seed: int = 0, **extra):
    names, values, fusion = CASES[case]
    cfg = from_dict(ModelConfig, {
        "backbone": TINY_VIT, "modalities": [{"name": n, "dim": DIMS[n]} for n in names],
        "adapters": [{"type": "caa", "sites": ["block"], "modalities": names, "bottleneck": 8,
                      "values": values, "fusion": fusion, **extra}],
    })
    torch.manual_seed(seed)
    return cfg, build_model(cfg, 3)


def trained_looking(model) -> None:
    """Past the zero-init up-projection, which would otherwise stop every gradient before it."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name:
                p.normal_(std=0.3)


def batch(names, b=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = {"video": torch.randint(0, 256, (b, 4, 32, 32, 3), dtype=torch.uint8, generator=g),
           "target": torch.randint(0, 3, (b,), generator=g)}
    for n in names:
        out[f"side_{n}"] = torch.randn(b, DIMS[n], generator=g)
    return out


def assert_every_adapter_parameter_trains(model, data) -> None:
    """One backward pass: every adapter parameter gets a non-zero gradient, as the run's health check
    reads it ("stalled: ... zero gradient")."""
    probe = GradProbe(model)
    model.train()
    model(data)["loss"].backward()
    probe.observe()
    assert probe.dead() == []
    adapter = [(n, p) for n, p in model.named_parameters() if ".adapters." in n]
    assert adapter and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in adapter), \
        [n for n, p in adapter if p.grad is None or not p.grad.abs().sum() > 0]


def unbuilt_parts(layer) -> set[str]:
    return {k.rsplit(".", 1)[0] for k in layer.unbuilt_keys}


@pytest.mark.parametrize("case", list(CASES))
def test_every_built_parameter_gets_a_gradient(case):
    _, model = model_for(case)
    trained_looking(model)
    assert_every_adapter_parameter_trains(model, batch(CASES[case][0]))
    caa = [m for m in model.modules() if isinstance(m, CrossAttentionAdapter)]
    assert caa and all(unbuilt_parts(m) == UNBUILT[case] for m in caa)


def one_site(dims: dict[str, int], tokens: int = 1) -> SiteInfo:
    """A block site of width C over a plain token sequence, with these side modalities configured."""
    context = ForwardContext()
    context.modality_dims = dict(dims)
    context.modality_tokens = {n: tokens for n in dims}
    return SiteInfo("blocks.0", "block", 0, C, 2, "test", TokenLayout(kind="sequence"), context, base=torch.nn.Identity())


def randomized(layer):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(std=0.5)
    return layer.eval()


def with_unbuilt(layer, shapes: dict[str, tuple], g) -> dict[str, torch.Tensor]:
    """The layer's tensors plus random ones (weight shape from ``shapes``) for the parts it does not build."""
    params = dict(layer.state_dict())
    for key in layer.unbuilt_keys:
        part, kind = key.rsplit(".", 1)
        params[key] = torch.randn(shapes[part] if kind == "weight" else shapes[part][:1], generator=g)
    return params


def layer_for(case: str) -> CrossAttentionAdapter:
    names, values, fusion = CASES[case]
    site = one_site({n: DIMS[n] for n in names})
    return randomized(CrossAttentionAdapter(CAAConfig(modalities=names, bottleneck=R, values=values, fusion=fusion), site))


def full_reference(layer, params, x, feats, present):
    """The computation with every part built: Q = ReLU(x W_down), one key per modality, softmax over
    it; AdapterFusion with query and key over the modalities; CM3T's delta = s * up(o)."""
    def lin(name, t):
        return t @ params[f"{name}.weight"].T + (params[f"{name}.bias"] if f"{name}.bias" in params else 0)

    values = layer.config.values
    h = torch.relu(lin("down.own.0", x))  # b l r
    zs = []
    for n, feat in feats.items():
        feat = feat * present[n][:, None]  # absent: zeroed slot
        k = lin(f"keys.proj.{n}", feat)[:, None]  # b 1 r: one key token
        scores = torch.einsum("blr,bmr->blm", h, k) / R**0.5
        if values == "modality":
            zs.append(scores.softmax(2) @ lin(f"values.proj.{n}", feat)[:, None])
        else:
            pooled = torch.einsum("blm,blr->bmr", scores.softmax(1), h)
            zs.append(scores.softmax(2) @ pooled)
    z = torch.stack(zs, dim=2)  # b l n r
    mask = torch.stack([present[n] for n in feats], dim=1)  # b n
    if layer.config.fusion == "sum":
        o = (z * mask[:, None, :, None]).sum(2)
    else:
        logits = torch.einsum("blr,blnr->bln", lin("fusion.query", h), lin("fusion.key", z))
        logits = logits.masked_fill(~mask[:, None], torch.finfo(logits.dtype).min)
        o = torch.einsum("bln,blnr->blr", logits.softmax(-1) * mask[:, None], lin("fusion.value", z))
    return params["scale"] * lin("up", o) * mask.any(1)[:, None, None]


def check_against(reference, layer, names: list[str], shapes: dict[str, tuple], tokens: int = 1) -> None:
    """The layer's output equals ``reference(layer, params, x, feats, present)`` computed with every
    part, the unbuilt ones random (weight shapes in ``shapes``): whatever they hold, the output is the
    same. Three clips: every modality present, some, none (zero delta)."""
    g = torch.Generator().manual_seed(3)
    params = with_unbuilt(layer, shapes, g)
    x = torch.randn(3, 5, C, generator=g)
    feats = {n: torch.randn(3, *([tokens] if tokens > 1 else []), DIMS[n], generator=g) for n in names}
    present = {n: torch.tensor([True, i % 2 == 0, False]) for i, n in enumerate(names)}
    layer.context.set(num_frames=1, side=feats, side_mask=present)
    with torch.no_grad():
        out = layer(x, x)
        ref = reference(layer, params, x, feats, present)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[2], torch.zeros_like(out[2]))  # no modality: zero delta
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("case", list(CASES))
def test_output_equals_the_full_attention_on_one_key(case):
    names = CASES[case][0]
    shapes = {"down.own.0": (R, C), "fusion.query": (R, R), "fusion.key": (R, R)}
    shapes.update({f"keys.proj.{n}": (R, DIMS[n]) for n in names})
    check_against(full_reference, layer_for(case), names, shapes)


def check_older_weights_load(tmp_path, make, data, kind: str, shapes: dict[str, tuple], stray: str) -> None:
    """Weights of a run saved when the parts a layer leaves out were built (``make(seed)`` -> (config,
    model)) load, by ``load_weights`` and ``init_from``: exactly the unbuilt names are skipped; a tensor
    of ``stray`` (a part the layer never leaves out) is still an error."""
    cfg, model = make(0)
    trained_looking(model)
    layers = [(n, m) for n, m in model.named_modules() if getattr(m, "unbuilt_keys", ())]
    assert layers
    old = trainable_state_dict(model)
    for name, layer in layers:
        old.update({f"{name}.{k}": v for k, v in with_unbuilt(layer, shapes, None).items() if k in layer.unbuilt_keys})
    save_weights(tmp_path / "weights.safetensors", old, to_dict(cfg))
    model.eval()
    _, fresh = make(0)  # the same random backbone; adapters and head scrambled
    trained_looking(fresh)
    load_weights(fresh, tmp_path / "weights.safetensors", to_dict(cfg))
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(data)["logits"], model(data)["logits"])
    _, again = make(5)
    trained_looking(again)
    marker = f".adapters.{kind}."
    assert init_adapter_from(again, kind, tmp_path) and all(
        torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items() if marker in k)
    old[f"{layers[0][0]}.{stray}.weight"] = torch.randn(3)
    save_weights(tmp_path / "weights.safetensors", old, to_dict(cfg))
    with pytest.raises(ValueError, match=r"unexpected 1 key\(s\).*" + re.escape(stray)):
        load_weights(fresh, tmp_path / "weights.safetensors", to_dict(cfg))
    with pytest.raises(ValueError, match=r"1 tensor\(s\) this model does not have.*" + re.escape(stray)):
        init_adapter_from(again, kind, tmp_path)


def test_weights_that_hold_the_unbuilt_parts_still_load(tmp_path):
    """A run saved when these parts were built."""
    shapes = {"down.own.0": (R, 32), "keys.proj.audio": (R, DIMS["audio"]), "fusion.query": (R, R), "fusion.key": (R, R)}
    check_older_weights_load(tmp_path, lambda seed: model_for("demo", seed), batch(["audio"]), "caa", shapes,
                             "keys.proj.flow")


def test_a_shared_down_projection_is_still_checked_when_nothing_reads_it():
    cfg = {"backbone": TINY_VIT, "modalities": [{"name": "audio", "dim": 6}],
           "adapters": [{"type": "caa", "modalities": ["audio"], "values": "modality", "share_down_with": "nope"}]}
    with pytest.raises(ValueError, match="expected one adapter named 'nope'"):
        build_model(from_dict(ModelConfig, cfg), 3)
