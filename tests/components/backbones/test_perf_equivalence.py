"""Speed-ups keep the maths (#16 item 5): each fast path equals the plain formula it replaces.

- TED: the fused path (one fc1 GEMM for both branches with the frame difference taken after fc1, one
  fc2 GEMM, channels-last convolutions) against Eq. 6-8 written out here with the branch modules'
  own Conv1d / Conv2d on the input-side differences; outputs and every gradient, each branch alone too.
- MHVA's group gathers (a permutation for even groups, the class token apart) against one adapter per
  group, gradients included.
- q/k/v split with unbind (split_heads) equals the indexed permutation, gradients included.
- QuickGELU through SiLU against open_clip's ``x * sigmoid(1.702 x)``, and swapped in by create_openclip.
- Gradient checkpointing covers M2-CLIP's text tower and CMLM block (tests/components/engine/test_training_levers.py
  checks the gradients of the whole M2-CLIP model with and without it).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from open_clip.transformer import QuickGELU

from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
from components.adapters.mhva import MHVAConfig, MultiHeadVisionAdapter
from components.adapters.ted import TEDAdapter, TEDConfig
from components.adapters.tokens import site_tokens, token_groups
from components.backbones.config import BackboneConfig
from components.backbones.fast_gelu import FastQuickGELU, use_fast_quick_gelu
from components.backbones.fast_mha import split_heads
from components.backbones.openclip_vit import create_openclip
from components.config import from_dict
from components.engine.checkpointing import backbone_blocks
from components.model import ModelConfig, build_model

T, GRID, PREFIX, DIM, R = 4, (3, 3), 1, 12, 6


def ted(**kw) -> TEDAdapter:
    context = ForwardContext()
    context.num_frames = T
    site = SiteInfo("blocks.0.pre_attn", "pre_attn", 0, DIM, 2, "openclip_vit",
                    TokenLayout(kind="frames", grid=GRID, num_prefix_tokens=PREFIX), context)
    layer = TEDAdapter(TEDConfig(bottleneck=R, **kw), site).double()
    torch.manual_seed(0)
    for p in layer.parameters():  # the zero-initialised convs and biases too: every term must matter
        torch.nn.init.normal_(p, std=0.3)
    return layer


def reference(layer: TEDAdapter, x: torch.Tensor) -> torch.Tensor:
    """Eq. 6-8 as the paper writes them: TE = fc2(Conv1d_T(fc1(Z))) on every token; TD =
    fc2(Conv2d_HW(fc1(z_t - z_{t-1}))) on patch tokens, first frame's difference 0, class token 0."""
    delta = torch.zeros_like(x)
    if layer.enhance is not None:
        e = layer.enhance
        h = rearrange(e.fc1(x), "(b t) n r -> (b n) r t", t=T)
        delta = delta + e.fc2(rearrange(e.conv(h), "(b n) r t -> (b t) n r", n=x.shape[1]))
    if layer.difference is not None:
        d = layer.difference
        z = rearrange(x[:, PREFIX:], "(b t) n c -> b t n c", t=T)
        diff = torch.cat([torch.zeros_like(z[:, :1]), z[:, 1:] - z[:, :-1]], dim=1)
        h = rearrange(d.fc1(diff), "b t (h w) r -> (b t) r h w", h=GRID[0])
        out = d.fc2(rearrange(d.conv(h), "bt r h w -> bt (h w) r"))
        delta = delta + torch.cat([torch.zeros_like(x[:, :PREFIX]), out], dim=1)
    return delta


def output_and_grads(fn, layer: TEDAdapter, x: torch.Tensor):
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    out = fn(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}


@pytest.mark.parametrize("branches", [{}, {"difference": False}, {"enhancement": False}])
def test_fused_ted_equals_the_unfused_formula(branches):
    layer = ted(**branches)
    x = torch.randn(2 * T, PREFIX + GRID[0] * GRID[1], DIM, dtype=torch.float64)
    fused = output_and_grads(lambda v: layer(v, None), layer, x)
    plain = output_and_grads(lambda v: reference(layer, v), layer, x)
    torch.testing.assert_close(fused[0], plain[0])
    assert fused[0].abs().max() > 0.1  # not a vacuous comparison of zeros
    torch.testing.assert_close(fused[1], plain[1])
    assert fused[2].keys() == plain[2].keys()
    for name in plain[2]:
        torch.testing.assert_close(fused[2][name], plain[2][name], msg=name)
    if branches.get("enhancement", True) and branches.get("difference", True):  # the branch modules alone too
        t = layer.context.num_frames
        alone = layer.enhance(x, t) + F.pad(layer.difference(x[:, PREFIX:], t, GRID), (0, 0, PREFIX, 0))
        torch.testing.assert_close(alone, plain[0])


def test_fused_ted_is_zero_at_init_and_for_a_static_clip():
    context = ForwardContext()
    context.num_frames = T
    site = SiteInfo("b", "pre_attn", 0, DIM, 2, "openclip_vit",
                    TokenLayout(kind="frames", grid=GRID, num_prefix_tokens=PREFIX), context)
    x = torch.randn(2 * T, PREFIX + GRID[0] * GRID[1], DIM)
    assert torch.equal(TEDAdapter(TEDConfig(bottleneck=R), site)(x, None), torch.zeros_like(x))
    layer = ted(enhancement=False).float()
    static = x[:1].expand(2 * T, -1, -1).contiguous()  # every frame the same: no motion
    assert layer(static, None).abs().max() == 0


def test_fast_quick_gelu_equals_open_clips():
    x = torch.randn(3, 7, 16, dtype=torch.float64) * 4
    outs, grads = [], []
    for module in (QuickGELU(), FastQuickGELU()):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=x.dtype).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append(xi.grad)
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(grads[1], grads[0])
    with torch.no_grad():
        torch.testing.assert_close(FastQuickGELU()(x), outs[0])


def test_create_openclip_swaps_quick_gelu_and_keeps_the_towers_outputs():
    cfg = from_dict(BackboneConfig, {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32,
                                     "num_frames": 4, "kwargs": {"quick_gelu": True}})
    torch.manual_seed(0)
    fast = create_openclip(cfg)
    assert not any(type(m) is QuickGELU for m in fast.modules())
    assert sum(type(m) is FastQuickGELU for m in fast.modules()) == 4  # 2 visual + 2 text blocks
    torch.manual_seed(0)
    plain = create_openclip(cfg)
    for m in plain.modules():
        if type(m) is FastQuickGELU:
            m.__class__ = QuickGELU
    image = torch.randn(2, 3, 32, 32)
    text = torch.randint(1, 400, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(fast.encode_image(image), plain.encode_image(image))
        torch.testing.assert_close(fast.encode_text(text), plain.encode_text(text))
    assert use_fast_quick_gelu(fast) == 0  # nothing left to swap


def test_checkpointing_covers_the_text_tower_and_the_cmlm_block():
    cfg = from_dict(ModelConfig, {
        "kind": "m2clip", "grad_checkpointing": True,
        "backbone": {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32, "num_frames": 4},
        "adapters": [{"type": "ted", "bottleneck": 8}],
        "m2clip": {"text_adapters": [{"type": "text_adapter", "bottleneck": 8}], "cmlm_adapter_width": 8},
    })
    model = build_model(cfg, 3, ["running", "jumping", "swimming"])
    blocks = {id(b) for b in backbone_blocks(model)}
    wanted = [*model.backbone.visual.transformer.resblocks, *model.text.transformer.resblocks, model.cmlm.block]
    assert all(id(b) in blocks for b in wanted) and len(blocks) == len(wanted)
    assert all(getattr(b.forward, "vidpeft_checkpointed", False) for b in wanted)


def test_split_heads_matches_the_rearranged_projection_and_its_gradient():
    qkv = torch.randn(2, 5, 3 * 4 * 6, dtype=torch.float64)
    weights = torch.randn(3, 2, 4, 5, 6, dtype=torch.float64)  # a different weight per q/k/v element
    grads = []
    for split in (lambda t: split_heads(t, 4), lambda t: rearrange(t, "b n (three h d) -> three b h n d", three=3, h=4)):
        t = qkv.clone().requires_grad_(True)
        parts = split(t)
        assert all(p.shape == (2, 4, 5, 6) for p in parts)
        sum((p * w).sum() for p, w in zip(parts, weights)).backward()
        grads.append((torch.stack(list(parts)).detach(), t.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize("layout,shape,prefix_group,even", [
    (TokenLayout(kind="frames", grid=(4, 4), num_prefix_tokens=1), (3, 17, 8), True, True),  # a permutation
    (TokenLayout(kind="frames", grid=(4, 4), num_prefix_tokens=1), (3, 17, 8), False, True),
    (TokenLayout(kind="frames", grid=(3, 3), num_prefix_tokens=1), (3, 10, 8), True, False),  # padded
    (TokenLayout(kind="swin", window=(2, 2, 2)), (2, 2, 3, 5, 8), True, False),
    (TokenLayout(kind="sequence", num_prefix_tokens=2), (2, 10, 8), True, True),
], ids=["frames-even", "frames-no-prefix-group", "frames-uneven", "swin-uneven", "sequence"])
def test_mhva_groups_equal_one_adapter_per_group_gradients_included(layout, shape, prefix_group, even):
    """MHVA's gathers (a permutation where groups are even, padding otherwise; the class token apart)
    against the plain reading: every token through its own group's down/up pair."""
    torch.manual_seed(0)
    site = SiteInfo("b.mlp", "mlp", 0, 8, 2, "test", layout, ForwardContext(), base=torch.nn.Identity())
    layer = MultiHeadVisionAdapter(MHVAConfig(heads=4, bottleneck=3, scale=2.0, adapt_prefix_tokens=prefix_group),
                                   site).double()
    for p in layer.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(*shape, dtype=torch.float64)
    ids = token_groups(tuple(shape), layout, 4, layer.grid, layer.prefix_group)
    rows = torch.where(ids >= 0, layer._remap[ids.clamp(min=0)], ids)

    def plain(v):
        tokens, restore = site_tokens(v, layout)
        out = torch.zeros_like(tokens)
        for g in range(layer.num_groups):
            sel = rows == g
            h = torch.relu(tokens[:, sel] @ layer.down_weight[g] + layer.down_bias[g])
            out[:, sel] = h @ layer.up_weight[g] + layer.up_bias[g]
        return layer.scale * restore(out)

    def hidden_plain(v):
        tokens, restore = site_tokens(v, layout)
        out = tokens.new_zeros(*tokens.shape[:2], 3)
        for g in range(layer.num_groups):
            sel = rows == g
            out[:, sel] = torch.relu(tokens[:, sel] @ layer.down_weight[g] + layer.down_bias[g])
        return restore(out)

    for fast, ref in ((lambda v: layer(v, v), plain), (layer.hidden, hidden_plain)):
        results = []
        for fn in (fast, ref):
            xi = x.clone().requires_grad_(True)
            layer.zero_grad(set_to_none=True)
            out = fn(xi)
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
            results.append((out.detach(), xi.grad, [p.grad for p in layer.parameters()]))
        (o1, g1, p1), (o2, g2, p2) = results
        torch.testing.assert_close(o1, o2)
        torch.testing.assert_close(g1, g2)
        for a, b in zip(p1, p2):
            if b is not None:
                torch.testing.assert_close(a, b)
    assert (layer._plan(tuple(shape), x.device).perm is not None) == even  # both paths are covered
