"""Prefix tuning under masked attention: the call's attn_mask / key_padding_mask / is_causal apply to
the real-key columns, never to the prefix columns. Reference: the same attention module run over
[prefix; keys] with the same mask padded by L unmasked prefix columns. Both the one-pass path (the
adapter computes the site) and the two-pass path (frozen module + residual) are checked, on
nn.MultiheadAttention (open_clip's causal text tower) and timm's Attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers.attention import Attention
from torch import nn

from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
from components.adapters.prefix import PrefixConfig, PrefixTuning
from components.adapters.wrapper import AdaptedModule

L, B, N, DIM, HEADS = 3, 2, 6, 16, 4


def prefix_site(module: nn.Module, gate: float = 1.0) -> tuple[PrefixTuning, AdaptedModule]:
    site = SiteInfo("x.attn", "attn", 0, DIM, HEADS, "test", TokenLayout(kind="sequence"), ForwardContext(), base=module)
    layer = PrefixTuning(PrefixConfig(prefix_length=L, hidden=8, dropout=0.0, zero_init_gate=True), site).eval()
    with torch.no_grad():
        layer.gate.fill_(gate)
    wrapper = AdaptedModule(module, site)
    wrapper.add("prefix", layer)
    return layer, wrapper


def causal_bool(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).triu(1)  # MultiheadAttention: True = masked out


def padding_bool() -> torch.Tensor:
    pad = torch.zeros(B, N, dtype=torch.bool)
    pad[1, -2:] = True  # the second sequence has two padding tokens at the end
    return pad


MHA_CASES = {
    "causal_bool": lambda: {"attn_mask": causal_bool(N)},
    "causal_float": lambda: {"attn_mask": torch.zeros(N, N).masked_fill(causal_bool(N), float("-inf"))},
    "causal_hint": lambda: {"attn_mask": causal_bool(N), "is_causal": True},
    "padding": lambda: {"key_padding_mask": padding_bool()},
    "causal_and_padding": lambda: {"attn_mask": causal_bool(N), "key_padding_mask": padding_bool()},
}


def mha_reference(mha: nn.MultiheadAttention, layer: PrefixTuning, x: torch.Tensor, masks: dict) -> torch.Tensor:
    """Joint attention: keys/values [C; x] projected by the module itself, masks padded with L
    unmasked prefix columns on the left."""
    c = layer.prefix()
    kv = torch.cat([c.expand(B, L, DIM), x], dim=1)
    padded = {}
    if "attn_mask" in masks:
        m = masks["attn_mask"]
        padded["attn_mask"] = F.pad(m, (L, 0), value=False if m.dtype == torch.bool else 0.0)
    if "key_padding_mask" in masks:
        padded["key_padding_mask"] = F.pad(masks["key_padding_mask"], (L, 0), value=False)
    return mha(x, kv, kv, need_weights=False, **padded)[0]


@pytest.mark.parametrize("path", ["one_pass", "two_pass", "weights_fallback"])
@pytest.mark.parametrize("case", list(MHA_CASES))
def test_multihead_attention_masks_apply_to_real_keys_only(case, path):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True).eval()
    layer, wrapper = prefix_site(mha)
    x = torch.randn(B, N, DIM)
    masks = MHA_CASES[case]()
    with torch.no_grad():
        ref = mha_reference(mha, layer, x, masks)
        if path == "one_pass":
            assert layer.replace_base(x, (x, x), {"need_weights": False, **masks}, need_frozen=False) is not None
            out = wrapper(x, x, x, need_weights=False, **masks)[0]
        elif path == "two_pass":
            frozen = mha(x, x, x, need_weights=False, **masks)[0]
            out = frozen + layer(x, frozen, call=((x, x), {"need_weights": False, **masks}))
        else:  # attention weights asked for: the frozen module runs, the residual carries the mask
            out, weights = wrapper(x, x, x, need_weights=True, **masks)
            assert weights.shape == (B, N, N)
    valid = torch.ones(B, N, dtype=torch.bool)
    torch.testing.assert_close(out[valid], ref[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("one_pass", [True, False], ids=["one_pass", "two_pass"])
def test_a_future_token_never_changes_an_earlier_output_under_a_causal_mask(one_pass):
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True).eval()
    layer, wrapper = prefix_site(mha)
    mask = causal_bool(N)
    x = torch.randn(B, N, DIM)
    y = x.clone()
    y[:, -1] += 5.0  # only the last token changes

    def run(inp):
        if one_pass:
            return wrapper(inp, inp, inp, need_weights=False, attn_mask=mask)[0]
        frozen = mha(inp, inp, inp, need_weights=False, attn_mask=mask)[0]
        return frozen + layer(inp, frozen, call=((inp, inp), {"need_weights": False, "attn_mask": mask}))

    with torch.no_grad():
        a, b = run(x), run(y)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], atol=1e-6, rtol=1e-6)
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-3


def test_sequence_first_multihead_attention_with_padding():
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(DIM, HEADS, batch_first=False).eval()
    layer, wrapper = prefix_site(mha)
    x = torch.randn(N, B, DIM)  # (N, B, C)
    pad = padding_bool()
    with torch.no_grad():
        c = layer.prefix()
        kv = torch.cat([c[:, None].expand(L, B, DIM), x], dim=0)
        ref = mha(x, kv, kv, need_weights=False, key_padding_mask=F.pad(pad, (L, 0), value=False))[0]
        out = wrapper(x, x, x, need_weights=False, key_padding_mask=pad)[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_cross_attention_calls_are_refused_not_silently_wrong():
    mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True).eval()
    layer, wrapper = prefix_site(mha)
    x, kv = torch.randn(B, N, DIM), torch.randn(B, N + 1, DIM)
    with pytest.raises(ValueError, match="needs self-attention"):
        wrapper(x, kv, kv, need_weights=False)


def timm_reference(attn: Attention, layer: PrefixTuning, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """SDPA over [prefix keys; keys] with an additive ``bias`` on the real-key columns only."""
    c = layer.prefix()
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).chunk(3, dim=-1)
    _, pk, pv = F.linear(c, attn.qkv.weight, attn.qkv.bias).chunk(3, dim=-1)
    k = torch.cat([pk.expand(B, L, DIM), k], dim=1)
    v = torch.cat([pv.expand(B, L, DIM), v], dim=1)
    split = lambda t: rearrange(t, "b n (h d) -> b h n d", h=HEADS)  # noqa: E731
    mask = None if bias is None else F.pad(bias, (L, 0))
    heads = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return attn.proj(rearrange(heads, "b h n d -> b n (h d)"))


TIMM_CASES = {
    # timm (SDPA semantics): bool True = may attend
    "causal_flag": ({"is_causal": True}, lambda: torch.zeros(N, N).masked_fill(causal_bool(N), float("-inf"))),
    "bool_mask": ({"attn_mask": ~causal_bool(N)}, lambda: torch.zeros(N, N).masked_fill(causal_bool(N), float("-inf"))),
    "padding_float": ({"attn_mask": torch.zeros(B, 1, 1, N).masked_fill(padding_bool()[:, None, None], float("-inf"))},
                      lambda: torch.zeros(B, 1, 1, N).masked_fill(padding_bool()[:, None, None], float("-inf"))),
}


@pytest.mark.parametrize("one_pass", [True, False], ids=["one_pass", "two_pass"])
@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_attention_masks_apply_to_real_keys_only(case, one_pass):
    torch.manual_seed(3)
    attn = Attention(DIM, num_heads=HEADS, qkv_bias=True).eval()
    layer, wrapper = prefix_site(attn)
    kwargs, bias = TIMM_CASES[case]
    x = torch.randn(B, N, DIM)
    with torch.no_grad():
        ref = timm_reference(attn, layer, x, bias().expand(B, 1, N, N))
        if one_pass:
            out = wrapper(x, **kwargs)
        else:
            frozen = attn(x, **kwargs)
            out = frozen + layer(x, frozen, call=((), kwargs))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_open_clip_text_tower_with_prefix_stays_causal():
    """M2-CLIP with ``type: prefix`` in its text adapters: a token's features depend on earlier tokens
    only, as in the frozen causal text tower."""
    from components.config import from_dict
    from components.model import ModelConfig, build_model

    torch.manual_seed(4)
    cfg = from_dict(ModelConfig, {
        "kind": "m2clip",
        "backbone": {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32, "num_frames": 2},
        "adapters": [],
        "m2clip": {"text_adapters": [{"type": "prefix", "prefix_length": 4, "hidden": 8}], "cmlm_adapter_width": 8},
    })
    model = build_model(cfg, 2, ["running", "jumping"]).eval()
    text = model.text
    assert any(isinstance(m, PrefixTuning) for m in text.modules())
    ids = torch.randint(1, 100, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 7) % 100 + 1
    with torch.no_grad():
        a, b = text.encode_tokens(ids), text.encode_tokens(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-5, rtol=1e-5)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-4
