"""Gated prefix tuning: with gate = 1 it IS attention over [prefix keys; real keys], per head.

Checked on each attention type it supports: timm ``Attention``, ``nn.MultiheadAttention`` (open_clip)
and torchvision's Video Swin window attention (shifted and padded windows, relative position bias
on real keys only).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers.attention import Attention
from torch import nn
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
from components.adapters.wrapper import AdaptedModule
from components.adapters.prefix import PrefixConfig, PrefixTuning
from components.backbones.attention import attention_internals

L = 3  # prefix length


def make_prefix(module: nn.Module, dim: int, heads: int, layout: TokenLayout, gate: float | None = 1.0):
    site = SiteInfo("x.attn", "attn", 0, dim, heads, "test", layout, ForwardContext(), base=module)
    layer = PrefixTuning(PrefixConfig(prefix_length=L, hidden=8, dropout=0.0, zero_init_gate=True), site).eval()
    if gate is not None:
        with torch.no_grad():
            layer.gate.fill_(gate)
    return layer


def call(module, x):
    inner = module.base_layer if isinstance(module, AdaptedModule) else module
    return module(x, x, x, need_weights=False) if isinstance(inner, nn.MultiheadAttention) else module(x)


def adapted(module, layer, x, one_pass: bool):
    """What AdaptedModule computes: frozen output + the prefix residual (two passes), or the site
    computed by the adapter alone (one pass, what the wrapper runs for plain self-attention)."""
    with torch.no_grad():
        if one_pass:
            wrapper = AdaptedModule(module, layer.site)
            wrapper.add("prefix", layer)
            out = call(wrapper, x)
            return out[0] if isinstance(out, tuple) else out
        out = call(module, x)
        out = out[0] if isinstance(out, tuple) else out
        return out + layer(x, out)


ONE_PASS = pytest.mark.parametrize("one_pass", [False, True], ids=["two_pass", "one_pass"])


@ONE_PASS
def test_timm_attention_equals_attention_over_prefix_and_tokens(one_pass):
    torch.manual_seed(0)
    dim, heads = 16, 2
    attn = Attention(dim, num_heads=heads, qkv_bias=True).eval()
    layer = make_prefix(attn, dim, heads, TokenLayout(kind="frames", grid=(2, 2), num_prefix_tokens=1))
    x = torch.randn(3, 5, dim)
    # independent reference: keys/values = [C W_k + b_k; x W_k + b_k], one softmax over both
    with torch.no_grad():
        c = layer.prefix()
        qkv_w, qkv_b = attn.qkv.weight, attn.qkv.bias
        q, k, v = F.linear(x, qkv_w, qkv_b).chunk(3, dim=-1)
        _, pk, pv = F.linear(c, qkv_w, qkv_b).chunk(3, dim=-1)
        k = torch.cat([pk.expand(3, L, dim), k], dim=1)
        v = torch.cat([pv.expand(3, L, dim), v], dim=1)
        split = lambda t: rearrange(t, "b n (h d) -> b h n d", h=heads)  # noqa: E731
        heads_out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        ref = attn.proj(rearrange(heads_out, "b h n d -> b n (h d)"))
    torch.testing.assert_close(adapted(attn, layer, x, one_pass), ref, atol=1e-5, rtol=1e-5)


@ONE_PASS
def test_multihead_attention_equals_attention_over_prefix_and_tokens(one_pass):
    torch.manual_seed(1)
    dim, heads = 16, 4
    mha = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    layer = make_prefix(mha, dim, heads, TokenLayout(kind="frames", grid=(2, 2), num_prefix_tokens=1))
    x = torch.randn(2, 5, dim)
    with torch.no_grad():
        c = layer.prefix()
        # keys/values fed as [C; x]: nn.MultiheadAttention projects them with its own k/v weights,
        # which is exactly P_k = C W_k + b_k, P_v = C W_v + b_v for the prefix rows
        kv = torch.cat([c.expand(2, L, dim), x], dim=1)
        ref = mha(x, kv, kv, need_weights=False)[0]
    torch.testing.assert_close(adapted(mha, layer, x, one_pass), ref, atol=1e-5, rtol=1e-5)


def swin_reference(attn: ShiftedWindowAttention3d, layer: PrefixTuning, x: torch.Tensor) -> torch.Tensor:
    """Attention over [prefix; window tokens] per window, bias/mask on the window part only."""
    internals = attention_internals(attn)
    view = internals.heads(x)
    pk, pv = internals.prefix_kv(layer.prefix())
    q = view.q * internals.scale
    n = q.shape[0]
    logits = torch.cat(
        [torch.einsum("bhnd,hld->bhnl", q, pk), q @ view.k.transpose(-2, -1) + view.logit_bias], dim=-1
    )
    values = torch.cat([pv.expand(n, *pv.shape), view.v], dim=-2)
    heads_out = logits.softmax(-1) @ values
    return attn.proj(view.restore(heads_out))


@ONE_PASS
@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 2, 2)], ids=["plain", "shifted"])
def test_swin_window_attention_equals_attention_over_prefix_and_tokens(shift, one_pass):
    torch.manual_seed(2)
    dim, heads = 16, 2
    attn = ShiftedWindowAttention3d(dim, [2, 4, 4], list(shift), heads).eval()
    layer = make_prefix(attn, dim, heads, TokenLayout(kind="swin", window=(2, 4, 4)))
    x = torch.randn(2, 3, 6, 8, dim)  # T=3, H=6 are padded up to the window multiples 4 and 8
    with torch.no_grad():
        internals = attention_internals(attn)
        view = internals.heads(x)
        # the accessor reproduces the frozen module exactly (same partition, bias, shift mask, unpad)
        plain = attn.proj(view.restore((view.q * internals.scale @ view.k.transpose(-2, -1) + view.logit_bias).softmax(-1) @ view.v))
        torch.testing.assert_close(plain, attn(x), atol=1e-5, rtol=1e-5)
        ref = swin_reference(attn, layer, x)
    torch.testing.assert_close(adapted(attn, layer, x, one_pass), ref, atol=1e-5, rtol=1e-5)


def test_zero_gate_is_exact_identity_and_gate_learns_first():
    torch.manual_seed(3)
    attn = Attention(16, num_heads=2, qkv_bias=True)
    layer = make_prefix(attn, 16, 2, TokenLayout(kind="sequence"), gate=None).train()
    x = torch.randn(2, 5, 16)
    delta = layer(x, attn(x))
    assert torch.count_nonzero(delta) == 0
    (delta * torch.randn(2, 5, 16)).sum().backward()  # a linear loss: nonzero gradient at delta = 0
    assert layer.gate.grad is not None and layer.gate.grad.abs() > 0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in layer.prefix.parameters())


def test_prefix_rejects_non_attention_site():
    site = SiteInfo("x.mlp", "mlp", 0, 16, 2, "test", TokenLayout(), ForwardContext(), base=nn.Linear(16, 16))
    with pytest.raises(TypeError, match="prefix adapter at x.mlp"):
        PrefixTuning(PrefixConfig(), site)


class Recorder(nn.Module):
    """A stand-in second adapter on the same site: records the base output it is given, adds zero."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = None

    def forward(self, x, base_out):
        self.seen = base_out
        return torch.zeros_like(base_out)


def swin_site():
    attn = ShiftedWindowAttention3d(16, [2, 4, 4], [1, 2, 2], 2)
    return attn, TokenLayout(kind="swin", window=(2, 4, 4)), torch.randn(2, 3, 6, 8, 16)


@pytest.mark.parametrize("family", ["timm", "mha", "swin"])
def test_one_pass_matches_two_pass_outputs_and_gradients(family):
    """The fused path is the same function as frozen attention + residual: same output, same
    gradients for the gate, the prefix rows and the input, at a gate that is neither 0 nor 1."""
    torch.manual_seed(4)
    if family == "timm":
        base, layout, x = Attention(16, num_heads=2, qkv_bias=True), TokenLayout(kind="sequence"), torch.randn(2, 5, 16)
    elif family == "mha":
        base, layout, x = nn.MultiheadAttention(16, 2, batch_first=True), TokenLayout(kind="sequence"), torch.randn(2, 5, 16)
    else:
        base, layout, x = swin_site()
    base.eval().requires_grad_(False)
    layer = make_prefix(base, 16, 2, layout, gate=0.3)
    wrapper = AdaptedModule(base, layer.site)
    wrapper.add("prefix", layer)
    grads = []
    for one_pass in (False, True):
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        if one_pass:
            out = call(wrapper, xi)
            out = out[0] if isinstance(out, tuple) else out
        else:
            frozen = call(base, xi)
            frozen = frozen[0] if isinstance(frozen, tuple) else frozen
            out = frozen + layer(xi, frozen)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), xi.grad, layer.gate.grad.clone(), layer.prefix.embedding.weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_one_pass_at_zero_gate_is_the_frozen_module_and_other_adapters_see_frozen_output():
    torch.manual_seed(5)
    attn = Attention(16, num_heads=2, qkv_bias=True).eval()
    layer = make_prefix(attn, 16, 2, TokenLayout(kind="sequence"), gate=0.5)
    wrapper = AdaptedModule(attn, layer.site)
    wrapper.add("prefix", layer)
    wrapper.add("probe", Recorder())
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        out = wrapper(x)
        frozen = attn(x)
        torch.testing.assert_close(wrapper.adapters["probe"].seen, frozen, atol=1e-6, rtol=1e-6)
        assert (out - frozen).abs().max() > 1e-4  # the prefix (gate 0.5) changed the output
        layer.gate.zero_()
        torch.testing.assert_close(wrapper(x), frozen, atol=1e-6, rtol=1e-6)


def test_weight_returning_calls_fall_back_to_the_frozen_module():
    """A call the adapter cannot reproduce (attention weights asked for) runs the frozen module plus
    the residual; masked calls are reproduced in one pass (masks: test_prefix_masks.py)."""
    torch.manual_seed(6)
    mha = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    layer = make_prefix(mha, 16, 2, TokenLayout(kind="sequence"), gate=1.0)
    wrapper = AdaptedModule(mha, layer.site)
    wrapper.add("prefix", layer)
    x = torch.randn(2, 5, 16)
    assert layer.replace_base(x, (x, x), {"need_weights": True}, need_frozen=False) is None
    mask = torch.zeros(5, 5)
    assert layer.replace_base(x, (x, x), {"need_weights": False, "attn_mask": mask}, need_frozen=False) is not None
    with torch.no_grad():
        out, weights = wrapper(x, x, x, need_weights=True)
        assert weights is not None and weights.shape == (2, 5, 5)
        frozen = mha(x, x, x, need_weights=False)[0]
        torch.testing.assert_close(out, frozen + layer(x, frozen))
