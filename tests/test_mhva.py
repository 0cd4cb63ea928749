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
