"""Multi-head vision adapter (MHVA, CM3T Sec. 3.2.2): a scaled parallel adapter per spatial group.

The token axis is split into G groups ("heads") and each group has its own down/up projection:

    delta_g = s * up_g(ReLU(down_g(x_g)))      for the tokens x_g of group g, put back in place

with a LEARNABLE scale s (the paper: a fixed s = 4.0 costs 1.1% on EK-100) and zero-initialised
up-projections, so the adapter starts as the identity.

Groups (see ``tokens.token_groups``):
- Video Swin: groups of attention windows. The (unshifted) window grid of each stage is split into a
  ``gh x gw`` grid of regions over space; all time steps of a region share its group. A stage with
  fewer windows than group rows/columns has only the groups its windows fall in: they are the only
  ones built (Swin-B at 224 px: the last stage's 7x7 tokens are one window, so one group, not G that
  would never get a gradient yet count as trainable).
- ViT / per-frame towers: groups of patches on the patch grid, split the same way.
- Sequence sites (ViViT's temporal transformer): contiguous chunks of the sequence.
- Prefix (class) tokens: their own extra group with its own pair (``adapt_prefix_tokens: true``), so
  the class token the head reads is adapted by weights of its own rather than by a spatial region's;
  ``false`` leaves prefix tokens unadapted (zero delta).

The per-group projections are stored as batched weights (G, d, r) / (G, r, d) and applied with one
einsum over tokens gathered into a (B, G, M, d) table (groups padded to the largest, M tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from components.adapters.base import WIDTH_HELP, AdapterConfig, AdapterLayer, SiteInfo, Width, check_width, scaled_width
from components.adapters.registry import register_adapter
from components.adapters.tokens import group_grid, group_plan, site_tokens, token_groups, used_groups
from components.config import cfg


@dataclass
class MHVAConfig(AdapterConfig):
    type: str = cfg("mhva", "adapter type")
    sites: list[str] = cfg(["mlp"], "backbone sites (CM3T: parallel to the MLP, the linear layers)")
    heads: int = cfg(4, "number of token groups G, each with its own down/up pair")
    grid: list[int] = cfg([], "groups as [rows, cols] over space; empty = most square factorisation of heads")
    bottleneck: Width = cfg(64, "hidden width r of each group's down/up projection" + WIDTH_HELP)
    scale: float = cfg(4.0, "initial value of the output scale s")
    learnable_scale: bool = cfg(True, "learn s (CM3T); false keeps it fixed")
    dropout: float = cfg(0.0, "dropout on the bottleneck activations")
    adapt_prefix_tokens: bool = cfg(True, "prefix/class tokens get their own group (true) or no adapter (false)")

    def __post_init__(self) -> None:
        if self.heads <= 0:
            raise ValueError(f"heads must be positive, got {self.heads}")
        check_width(self.bottleneck, "bottleneck")
        if self.grid and (len(self.grid) != 2 or self.grid[0] * self.grid[1] != self.heads):
            raise ValueError(f"grid {self.grid} must be [rows, cols] with rows*cols == heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class MultiHeadVisionAdapter(AdapterLayer):
    def __init__(self, config: MHVAConfig, site: SiteInfo) -> None:
        super().__init__(config, site)
        d, r = site.dim, scaled_width(config.bottleneck, site.dim)
        self.grid = group_grid(config.heads, config.grid)
        self.prefix_group = config.adapt_prefix_tokens and site.layout.num_prefix_tokens > 0
        # only the spatial groups some token falls in get weights; ids 0..G-1 (and G, the prefix
        # group) map to rows 0..g-1 of the batched weights, -1 = a group that was not built
        used = used_groups(site.layout, config.heads, self.grid) or list(range(config.heads))
        remap = torch.full((config.heads + 1,), -1, dtype=torch.long, device="cpu")
        remap[used] = torch.arange(len(used), device="cpu")
        remap[config.heads] = len(used)  # the prefix group, if any, is the last one
        self._remap = remap
        g = len(used) + int(self.prefix_group)
        bound = 1.0 / math.sqrt(d)  # nn.Linear's default init for the down-projections
        self.down_weight = nn.Parameter(torch.empty(g, d, r).uniform_(-bound, bound))
        self.down_bias = nn.Parameter(torch.empty(g, r).uniform_(-bound, bound))
        self.up_weight = nn.Parameter(torch.zeros(g, r, d))
        self.up_bias = nn.Parameter(torch.zeros(g, d))
        self.act = nn.ReLU()
        self.drop = nn.Dropout(config.dropout)
        self.register_scale(config.scale, config.learnable_scale)
        self._plans: dict[tuple, GroupPlan] = {}

    @property
    def num_groups(self) -> int:
        return self.down_weight.shape[0]

    def _plan(self, shape: tuple[int, ...], device: torch.device) -> "GroupPlan":
        """How to gather a site tensor of ``shape`` into groups; cached per shape and device."""
        key = (tuple(shape), str(device))
        if key not in self._plans:
            ids = token_groups(shape, self.site.layout, self.config.heads, self.grid, self.prefix_group)
            rows = torch.where(ids >= 0, self._remap[ids.clamp(min=0)], ids)
            if bool(((ids >= 0) & (rows < 0)).any()):
                raise ValueError(f"MHVA at {self.site.path}: input {tuple(shape)} has tokens in groups built for "
                                 f"none of the {self.site.layout.grid} grid's windows (model.backbone.img_size "
                                 "must match the input frames)")
            self._plans[key] = GroupPlan(rows, self.num_groups - int(self.prefix_group), self.site.layout.num_prefix_tokens,
                                         device)
        return self._plans[key]

    def _grouped_hidden(self, x: torch.Tensor):
        """ReLU(x_g W_down_g + b_g): spatial groups (B', G, M, r), the prefix group's (B', P, r) or None,
        the plan and the layout's inverse."""
        tokens, restore = site_tokens(x, self.site.layout)  # (B', N, d)
        plan = self._plan(tuple(x.shape), x.device)
        g = plan.groups
        xg = plan.gather(tokens)  # (B', G, M, d): each spatial group's tokens (padded if uneven)
        h = torch.einsum("bgmd,gdr->bgmr", xg, self.down_weight[:g]) + self.down_bias[:g, None, :]
        hp = None
        if self.prefix_group:  # the class token(s) alone: no padding to a spatial group's size
            hp = self.act(tokens[:, : plan.prefix] @ self.down_weight[g] + self.down_bias[g])
        return self.act(h), hp, plan, restore

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck activations ReLU(x W_down) in x's layout with r channels (used by CAA/MMCA)."""
        h, hp, plan, restore = self._grouped_hidden(x)
        return restore(plan.scatter(h, hp))

    def forward(self, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        h, hp, plan, restore = self._grouped_hidden(x)
        g = plan.groups
        y = torch.einsum("bgmr,grd->bgmd", self.drop(h), self.up_weight[:g]) + self.up_bias[:g, None, :]
        yp = self.drop(hp) @ self.up_weight[g] + self.up_bias[g] if hp is not None else None
        return self.scale * restore(plan.scatter(y, yp))  # (B', N, d) -> x's layout


class GroupPlan:
    """Gather / scatter between (B', N, C) tokens and (B', G, M, C) spatial groups; prefix tokens
    (the first ``prefix`` of N, which ``token_groups`` gives their own id or none) are kept apart.

    When the spatial groups are equal and cover every non-prefix token (ViT patch grids split evenly,
    Swin stages whose windows split evenly), gathering is a permutation of the tokens: an
    ``index_select`` whose backward is the inverse ``index_select``. Otherwise groups are padded to the
    largest (``group_plan``) and scattered back through an all-zero slot; the backward of those
    gathers accumulates (``index_put`` with duplicates), several times slower on CPU."""

    def __init__(self, rows: torch.Tensor, groups: int, prefix: int, device: torch.device) -> None:
        self.groups, self.prefix = groups, prefix
        spatial = rows[prefix:]
        counts = torch.bincount(spatial.clamp(min=0), minlength=groups)
        even = bool((spatial >= 0).all()) and groups > 0 and bool((counts == counts[0]).all())
        if even:
            perm = torch.argsort(spatial, stable=True)  # tokens in group order
            self.perm, self.inverse = perm.to(device), torch.argsort(perm).to(device)
            self.size = len(spatial) // groups
        else:
            self.perm = None
            index, slot = group_plan(spatial, groups)
            self.index, self.slot = index.to(device), slot.to(device)

    def gather(self, tokens: torch.Tensor) -> torch.Tensor:
        spatial = tokens[:, self.prefix :]
        if self.perm is not None:
            flat = _Permute.apply(spatial, self.perm, self.inverse)
            return flat.unflatten(1, (self.groups, self.size))
        return spatial[:, self.index]

    def scatter(self, y: torch.Tensor, prefix_out: torch.Tensor | None) -> torch.Tensor:
        """(B', G, M, c) groups (+ (B', P, c) prefix outputs, or zeros) -> (B', N, c) in token order."""
        flat = rearrange(y, "b g m c -> b (g m) c")
        if self.perm is not None:
            out = _Permute.apply(flat, self.inverse, self.perm)
        else:
            flat = torch.cat([flat, flat.new_zeros(flat.shape[0], 1, flat.shape[2])], dim=1)  # the zero slot
            out = flat[:, self.slot]
        if not self.prefix:
            return out
        if prefix_out is None:
            prefix_out = out.new_zeros(out.shape[0], self.prefix, out.shape[2])
        return torch.cat([prefix_out, out], dim=1)


class _Permute(torch.autograd.Function):
    """``x[:, order]`` for a permutation ``order`` with ``inverse``: the backward is a gather too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


register_adapter("mhva", MHVAConfig, MultiHeadVisionAdapter,
                 not_mergeable="a ReLU bottleneck with attention over token groups")
