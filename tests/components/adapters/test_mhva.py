"""MHVA: which tokens share a down/up pair, and the batched einsum equals a per-group loop."""

from __future__ import annotations

import pytest
import torch

from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
from components.adapters.mhva import MHVAConfig, MultiHeadVisionAdapter
from components.adapters.tokens import group_grid, group_plan, site_tokens, token_groups


def test_group_grid():
    assert group_grid(4) == (2, 2) and group_grid(8) == (2, 4) and group_grid(2) == (1, 2) and group_grid(3) == (1, 3)
    assert group_grid(6, [3, 2]) == (3, 2)
    with pytest.raises(ValueError):
        group_grid(6, [2, 2])


def test_vit_patches_grouped_on_the_grid_with_cls_in_its_own_group():
    layout = TokenLayout(kind="frames", grid=(4, 4), num_prefix_tokens=1)
    ids = token_groups((6, 17, 8), layout, 4, (2, 2), prefix_group=True)
    grid = ids[1:].view(4, 4)
    assert ids[0] == 4  # the class token: group G
    assert grid.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert token_groups((6, 17, 8), layout, 4, (2, 2), prefix_group=False)[0] == -1


def test_swin_tokens_grouped_by_attention_window():
    layout = TokenLayout(kind="swin", window=(2, 2, 2))
    # (B, T, H, W, C) = (1, 2, 4, 6, 8): a 2 x 3 grid of windows split into 2 x 2 regions
    ids = token_groups((1, 2, 4, 6, 8), layout, 4, (2, 2), prefix_group=True).view(2, 4, 6)
    assert torch.equal(ids[0], ids[1])  # same region at every time step
    windows = ids[0, ::2, ::2]  # one token per window
    assert windows.tolist() == [[0, 0, 1], [2, 2, 3]]
    assert torch.equal(ids[0], windows.repeat_interleave(2, 0).repeat_interleave(2, 1))  # whole windows
    # a stage with a single window: every token in one group
    assert token_groups((1, 2, 2, 2, 8), layout, 4, (2, 2), True).unique().tolist() == [0]


def test_sequence_chunks():
    ids = token_groups((2, 9, 4), TokenLayout(kind="sequence", num_prefix_tokens=1), 2, (1, 2), True)
    assert ids.tolist() == [2, 0, 0, 0, 0, 1, 1, 1, 1]


def test_group_plan_is_a_permutation_with_padding():
    ids = torch.tensor([0, 1, 1, 1, -1, 0])
    index, slot = group_plan(ids, 2)
    assert index.shape == (2, 3)
    flat = index.flatten()
    for n, s in enumerate(slot.tolist()):
        if ids[n] < 0:
            assert s == 6  # the zero slot
        else:
            assert flat[s] == n


@pytest.mark.parametrize(
    "layout,shape",
    [
        (TokenLayout(kind="frames", grid=(3, 3), num_prefix_tokens=1), (4, 10, 8)),
        (TokenLayout(kind="swin", window=(2, 2, 2)), (2, 2, 3, 5, 8)),  # uneven windows -> padded groups
    ],
    ids=["frames", "swin"],
)
def test_batched_groups_equal_a_loop_over_groups(layout, shape):
    torch.manual_seed(0)
    site = SiteInfo("b.mlp", "mlp", 0, 8, 2, "test", layout, ForwardContext(), base=torch.nn.Identity())
    layer = MultiHeadVisionAdapter(MHVAConfig(heads=4, bottleneck=3, scale=2.0), site)
    with torch.no_grad():
        layer.up_weight.normal_()
        layer.up_bias.normal_()
    x = torch.randn(*shape)
    out = layer(x, x)
    tokens, restore = site_tokens(x, layout)
    ids = token_groups(tuple(shape), layout, 4, layer.grid, layer.prefix_group)
    ref = torch.zeros_like(tokens)
    for g in range(layer.num_groups):  # the plain reading: each group its own adapter
        sel = ids == g
        h = torch.relu(tokens[:, sel] @ layer.down_weight[g] + layer.down_bias[g])
        ref[:, sel] = h @ layer.up_weight[g] + layer.up_bias[g]
    torch.testing.assert_close(out, 2.0 * restore(ref))
    assert isinstance(layer.scale, torch.nn.Parameter)  # learnable s by default


def test_swin_b_last_stage_builds_one_group_and_every_built_group_gets_a_gradient():
    """Video Swin-B at 224 px: stages of 56, 28, 14 and 7 tokens per side, windows of 7: 8x8, 4x4,
    2x2 and 1 window(s). With G = 4 the last stage's single window fills one group: only that one is
    built (and counted as trainable), and every group built gets a gradient."""
    from components.config import from_dict
    from components.model import ModelConfig, build_model

    cfg = from_dict(ModelConfig, {
        "backbone": {"family": "video_swin", "name": "swin3d_b", "img_size": 224, "num_frames": 32},
        "adapters": [{"type": "mhva", "sites": ["mlp"], "heads": 4, "bottleneck": 64}],
    })
    with torch.device("meta"):
        model = build_model(cfg, 10)
    layers = [m for m in model.modules() if isinstance(m, MultiHeadVisionAdapter)]
    assert [layer.num_groups for layer in layers] == [4] * 22 + [1] * 2  # depths 2, 2, 18, 2

    # the same on a tiny Swin, where the forward can run: 32 px, patch 4 -> 8, 4, 2 tokens per side,
    # window 4 -> stage grids of 2x2, 1 and 1 window(s)
    tiny = from_dict(ModelConfig, {
        "backbone": {"family": "video_swin", "name": "swin3d_t", "img_size": 32, "num_frames": 4,
                     "kwargs": {"embed_dim": 8, "depths": [1, 1, 1], "num_heads": [1, 1, 1],
                                "window_size": [2, 4, 4], "stochastic_depth_prob": 0.0}},
        "adapters": [{"type": "mhva", "sites": ["mlp"], "heads": 4, "bottleneck": 4, "scale": 1.0}],
    })
    torch.manual_seed(0)
    model = build_model(tiny, 3)
    layers = [m for m in model.modules() if isinstance(m, MultiHeadVisionAdapter)]
    assert [layer.num_groups for layer in layers] == [4, 1, 1]
    with torch.no_grad():
        for layer in layers:
            layer.up_weight.normal_()  # past init, so down-projections get gradients too
    batch = {"video": torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8), "target": torch.tensor([0, 1])}
    model(batch)["loss"].backward()
    for layer in layers:
        for g in range(layer.num_groups):
            assert layer.down_weight.grad[g].abs().sum() > 0 and layer.up_weight.grad[g].abs().sum() > 0


def test_vit_group_grid_larger_than_the_patch_grid_builds_only_filled_groups():
    layout = TokenLayout(kind="frames", grid=(1, 2), num_prefix_tokens=1)
    site = SiteInfo("blocks.0.mlp", "mlp", 0, 8, 1, "test", layout, ForwardContext(), base=torch.nn.Identity())
    layer = MultiHeadVisionAdapter(MHVAConfig(heads=4, bottleneck=4), site)
    assert layer.num_groups == 2 + 1  # patches fill groups 0 and 1 of the 2x2 grid (row 0); + the class token's
    assert layer(torch.randn(3, 3, 8), None).shape == (3, 3, 8)
