"""TED-Adapter (M2-CLIP): Temporal Enhancement + temporal Difference, added to the residual stream.

For per-frame tokens ``Z`` of a clip (class token + ``H*W`` patch tokens per frame):

- enhancement (TE, Eq. 6): ``fc2(Conv1d_T(fc1(Z)))``, a depthwise convolution over time applied to
  every token, class token included;
- difference (TD, Eq. 7): ``fc2(Conv2d_HW(fc1(z_t - z_{t-1})))`` on patch tokens only, a depthwise
  spatial convolution on the patch grid; the first frame's difference is zero; the class token gets 0;
- ``A(Z) = Z + Z_E + Z_D`` (Eq. 8).

Placement: the paper puts TED before MHSA. With open_clip blocks that is the ``pre_attn`` site (an
identity tap on the residual stream, see ``components/backbones/openclip_vit.py``), where the
wrapper's ``base(x) + delta(x)`` is exactly ``x + TED(x)`` feeding both the attention branch and the
residual. ``pre_mlp`` is the placement of the official code's "12x384" models. At ``attn``/``mlp``/
``block`` sites (e.g. timm ViT, which has no taps) the same delta acts as a parallel adapter.

Identity at init: both depthwise convolutions (weights and biases) and the fc biases start at zero,
as in the official code and ST-Adapter, so ``delta == 0`` while the fc weights get gradient at once.
The TD branch has no biases at all, so a static clip (all frames equal) gives exactly zero TD output
for any weights: the branch only ever reports motion.
Table 5 ablations: ``enhancement``/``difference`` switch the branches, ``layers`` picks the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from components.adapters.base import WIDTH_HELP, AdapterConfig, AdapterLayer, SiteInfo, Width, check_width, scaled_width
from components.adapters.registry import register_adapter
from components.config import ConfigError, cfg


@dataclass
class TEDConfig(AdapterConfig):
    type: str = cfg("ted", "adapter type")
    sites: list[str] = cfg(["pre_attn"], "pre_attn = before MHSA (paper); pre_mlp = before the FFN (official 12x384)")
    bottleneck: Width = cfg(384, "hidden width of each branch (paper: 384 for ViT-B/16)" + WIDTH_HELP)
    enhancement: bool = cfg(True, "temporal-enhancement branch (TE): fc1 -> depthwise Conv1d over T -> fc2")
    difference: bool = cfg(True, "temporal-difference branch (TD): frame differences -> fc1 -> depthwise conv -> fc2")
    temporal_kernel: int = cfg(3, "TE kernel size over time (odd)")
    spatial_kernel: int = cfg(3, "TD kernel size on the patch grid (odd)")

    def __post_init__(self) -> None:
        check_width(self.bottleneck, "bottleneck")
        if not (self.enhancement or self.difference):
            raise ValueError("enable at least one TED branch (enhancement or difference)")
        for name in ("temporal_kernel", "spatial_kernel"):
            k = getattr(self, name)
            if k <= 0 or k % 2 == 0:
                raise ValueError(f"{name} must be a positive odd number, got {k}")


class TemporalEnhancement(nn.Module):
    """fc1 -> depthwise Conv1d over time (every token) -> fc2."""

    def __init__(self, dim: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.conv = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)
        for p in (self.fc1.bias, self.conv.weight, self.conv.bias, self.fc2.bias):
            nn.init.zeros_(p)

    def mix(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The depthwise convolution over time of every token's hidden vector: (b t) n r -> (b t) n r.

        Run as a (k, 1) conv2d on a channels-last view (b, r, t, n) of the same memory: no layout
        copies before or after (the Conv1d over (b n) r t needs two), same weights and sums."""
        x = rearrange(h, "(b t) n r -> b r t n", t=num_frames)  # a channels-last view when h is contiguous
        k = self.conv.kernel_size[0]
        y = F.conv2d(x.contiguous(memory_format=torch.channels_last), self.conv.weight.unsqueeze(-1),
                     self.conv.bias, padding=(k // 2, 0), groups=self.conv.groups)
        return rearrange(y, "b r t n -> (b t) n r")

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The branch on its own (reference; ``TEDAdapter`` fuses the two branches' projections)."""
        return self.fc2(self.mix(self.fc1(x), num_frames))  # (b t) n c


class TemporalDifference(nn.Module):
    """(z_t - z_{t-1}) -> fc1 -> depthwise spatial conv on the patch grid -> fc2; bias-free."""

    def __init__(self, dim: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.conv = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)
        nn.init.zeros_(self.conv.weight)

    @staticmethod
    def frame_difference(z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """z_t - z_{t-1} per token, zero for the first frame: (b t) n c -> (b t) n c."""
        z = rearrange(z, "(b t) n c -> b t n c", t=num_frames)
        d = F.pad(z[:, 1:] - z[:, :-1], (0, 0, 0, 0, 1, 0))  # first frame's difference := 0
        return rearrange(d, "b t n c -> (b t) n c")

    def mix(self, d: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The depthwise conv on the patch grid: (b t) (h w) r -> (b t) (h w) r, on a channels-last view."""
        x = rearrange(d, "bt (h w) r -> bt r h w", h=grid[0], w=grid[1])
        y = self.conv(x.contiguous(memory_format=torch.channels_last))
        return rearrange(y, "bt r h w -> bt (h w) r")

    def forward(self, patches: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        """The branch on its own (reference): fc1 of the frame differences of the patch tokens."""
        return self.fc2(self.mix(self.fc1(self.frame_difference(patches, num_frames)), grid))  # (b t) (h w) c


class TEDAdapter(AdapterLayer):
    def __init__(self, config: TEDConfig, site: SiteInfo) -> None:
        super().__init__(config, site)
        if site.layout.kind != "frames":
            raise ConfigError(
                f"{site.path}: the TED adapter needs per-frame tokens (layout 'frames'), "
                f"{site.family} has layout {site.layout.kind!r} there"
            )
        self.prefix = site.layout.num_prefix_tokens
        self.grid = tuple(site.layout.grid)
        d, r = site.dim, scaled_width(config.bottleneck, site.dim)
        self.enhance = TemporalEnhancement(d, r, config.temporal_kernel) if config.enhancement else None
        self.difference = TemporalDifference(d, r, config.spatial_kernel) if config.difference else None

    def forward(self, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        t = self.context.num_frames
        if x.shape[0] % t or x.shape[1] != self.prefix + self.grid[0] * self.grid[1]:
            raise ValueError(
                f"{self.site.path}: TED expects ((B*T), {self.prefix}+{self.grid[0]}*{self.grid[1]}, C) tokens "
                f"with T={t}, got {tuple(x.shape)}"
            )
        return self.fused(x, t)

    def fused(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Both branches with one input and one output projection (Eq. 6-8, same sums regrouped).

        fc1 is linear and TD's has no bias, so fc1_D(z_t - z_{t-1}) = fc1_D(z_t) - fc1_D(z_{t-1}): both
        branches' fc1 run as one GEMM on the tokens ([W1_E; W1_D], width 2r) and TD takes its frame
        differences in the r-wide hidden space. fc2_E(e) + pad(fc2_D(d)) is one GEMM on [e, pad(d)]
        with [W2_E, W2_D] (TD's class-token rows are zero, as the reference's padding). The weights
        stay the branch modules' own (state dict unchanged); ``TemporalEnhancement.forward`` and
        ``TemporalDifference.forward`` are the unfused reference (tests/components/backbones/test_perf_equivalence.py).
        """
        branches = [b for b in (self.enhance, self.difference) if b is not None]
        r = branches[0].fc1.out_features
        w1 = _cat([b.fc1.weight for b in branches], 0)  # (k r, c)
        b1 = _cat([b.fc1.bias if b.fc1.bias is not None else x.new_zeros(r) for b in branches], 0)
        hidden = F.linear(x, w1, b1).split(r, dim=-1)  # k x (b t) n r
        mixed = []
        if self.enhance is not None:
            mixed.append(self.enhance.mix(hidden[0], t))  # (b t) n r
        if self.difference is not None:
            d = self.difference.frame_difference(hidden[-1][:, self.prefix :], t)  # (b t) (h w) r
            mixed.append(F.pad(self.difference.mix(d, self.grid), (0, 0, self.prefix, 0)))  # class token(s): 0
        w2 = _cat([b.fc2.weight for b in branches], 1)  # (c, k r)
        bias = self.enhance.fc2.bias if self.enhance is not None else None
        return F.linear(_cat(mixed, -1), w2, bias)  # (b t) n c


def _cat(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim)


register_adapter("ted", TEDConfig, TEDAdapter,
                 not_mergeable="depthwise convolutions over time and over frame differences")
