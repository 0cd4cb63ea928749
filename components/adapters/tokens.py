"""Token bookkeeping shared by adapters: per-clip token views and spatial groups of tokens.

A site's tensor depends on the backbone's ``TokenLayout``:

- ``frames``: (B*T, P + H*W, C), P prefix (class) tokens then the H x W patch grid of each frame;
- ``swin``:   (B, T', H', W', C) channels-last grids (Video Swin), attention over 3-D windows
  (``grid``: the stage's (H', W') at the configured image size, when known);
- ``sequence``: (B, P + N, C) tokens with no spatial meaning (ViViT's temporal transformer, text).

``clip_tokens`` turns any of them into (B, L, C) with all tokens of one clip on one row (what a
cross-attention over the clip needs) and returns the inverse. ``token_groups`` assigns every token to
one of G spatial groups (MHVA): Swin tokens by the attention window they sit in, ViT patches by their
position on the patch grid, sequence tokens by contiguous chunks; prefix tokens get their own group.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from einops import rearrange

from components.token_layout import TokenLayout


def clip_tokens(x: torch.Tensor, layout: TokenLayout, num_frames: int) -> tuple[torch.Tensor, Callable]:
    """(B, L, C) view with one clip per row, and ``restore(y)`` mapping (B, L, C') back to x's layout."""
    if layout.kind == "frames":
        if x.dim() != 3 or x.shape[0] % num_frames:
            raise ValueError(f"frames layout expects (B*T, N, C) with T={num_frames}, got {tuple(x.shape)}")
        n = x.shape[1]
        tokens = rearrange(x, "(b t) n c -> b (t n) c", t=num_frames)
        return tokens, lambda y: rearrange(y, "b (t n) c -> (b t) n c", t=num_frames, n=n)
    if layout.kind == "swin":
        if x.dim() != 5:
            raise ValueError(f"swin layout expects (B, T, H, W, C), got {tuple(x.shape)}")
        _, t, h, w, _ = x.shape
        tokens = rearrange(x, "b t h w c -> b (t h w) c")
        return tokens, lambda y: rearrange(y, "b (t h w) c -> b t h w c", t=t, h=h, w=w)
    if layout.kind == "sequence":
        if x.dim() != 3:
            raise ValueError(f"sequence layout expects (B, N, C), got {tuple(x.shape)}")
        return x, lambda y: y
    raise ValueError(f"unknown token layout kind {layout.kind!r}")


def site_tokens(x: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, Callable]:
    """(B', N, C) rows exactly as the site holds them (no regrouping over time), and the inverse."""
    if layout.kind == "swin":
        _, t, h, w, _ = x.shape
        tokens = rearrange(x, "b t h w c -> b (t h w) c")
        return tokens, lambda y: rearrange(y, "b (t h w) c -> b t h w c", t=t, h=h, w=w)
    return x, lambda y: y


def group_grid(groups: int, grid: list[int] | tuple[int, ...] = ()) -> tuple[int, int]:
    """Rows x columns of spatial groups: ``grid`` if given, else the most square factorisation of G."""
    if grid:
        gh, gw = int(grid[0]), int(grid[1])
        if gh * gw != groups:
            raise ValueError(f"group grid {gh}x{gw} does not hold {groups} groups")
        return gh, gw
    gh = max(d for d in range(1, int(math.isqrt(groups)) + 1) if groups % d == 0)
    return gh, groups // gh


def token_groups(
    shape: tuple[int, ...], layout: TokenLayout, groups: int, grid: tuple[int, int], prefix_group: bool
) -> torch.Tensor:
    """Group id of every token of a site tensor of ``shape`` (flattened as ``site_tokens`` does).

    Ids are 0..G-1 for spatial groups, G for prefix tokens when ``prefix_group`` (else -1: no adapter).
    """
    gh, gw = grid
    if layout.kind == "swin":
        # Group = which attention window a token is in, windows split into a gh x gw grid over space.
        # The window is clipped to the input size exactly as torchvision does; the grouping uses the
        # unshifted window grid (shifted blocks move windows by half: a fixed grid keeps each group a
        # fixed region of the frame in every block, which is the point of per-region adapters).
        _, t, h, w, _ = shape
        wh, ww = min(layout.window[1], h), min(layout.window[2], w)
        n_rows, n_cols = math.ceil(h / wh), math.ceil(w / ww)
        row = torch.arange(h) // wh * gh // n_rows  # window row -> group row
        col = torch.arange(w) // ww * gw // n_cols
        ids = (row[:, None] * gw + col[None, :]).expand(t, h, w)  # same region at every time step
        return ids.reshape(-1)
    n = shape[1]
    p = layout.num_prefix_tokens
    prefix = torch.full((p,), groups if prefix_group else -1, dtype=torch.long)
    if layout.kind == "frames":
        h, w = layout.grid
        if n - p != h * w:
            raise ValueError(f"frames layout: {n} tokens != {p} prefix + {h}x{w} patches")
        row = torch.arange(h) * gh // h
        col = torch.arange(w) * gw // w
        ids = (row[:, None] * gw + col[None, :]).reshape(-1)
    elif layout.kind == "sequence":
        ids = torch.arange(n - p) * groups // max(n - p, 1)  # contiguous chunks along the sequence
    else:
        raise ValueError(f"unknown token layout kind {layout.kind!r}")
    return torch.cat([prefix, ids])


def used_groups(layout: TokenLayout, groups: int, grid: tuple[int, int]) -> list[int] | None:
    """The spatial group ids any token falls in, from the layout's static grid: a Video Swin stage
    with fewer windows than group rows/columns (Swin-B at 224 px: the last stage is 7x7 tokens, one
    window) or a patch grid smaller than the group grid fills only some groups. None when the layout
    does not say (sequence sites, or no grid given): then every group is used."""
    h, w = layout.grid
    if not h or not w:
        return None
    if layout.kind == "swin":
        shape = (1, 1, h, w, 1)
    elif layout.kind == "frames":
        shape = (1, layout.num_prefix_tokens + h * w, 1)
    else:
        return None
    with torch.device("cpu"):  # bookkeeping, also when the model is built on the meta device
        ids = token_groups(shape, layout, groups, grid, prefix_group=False)
    return sorted(set(ids[ids >= 0].tolist()))


def group_plan(ids: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather table for batched per-group weights.

    Returns ``index`` (G, M): token positions of each group padded to the largest group M (padding
    points at token 0 and is never read back), and ``slot`` (N,): each token's position in the
    flattened (G*M) table, or G*M (an all-zero slot) for tokens in no group.
    """
    members = [torch.nonzero(ids == g).flatten() for g in range(num_groups)]
    m = max(1, max(len(x) for x in members))
    index = torch.zeros(num_groups, m, dtype=torch.long)
    slot = torch.full((len(ids),), num_groups * m, dtype=torch.long)
    for g, pos in enumerate(members):
        index[g, : len(pos)] = pos
        slot[pos] = g * m + torch.arange(len(pos))
    return index, slot
