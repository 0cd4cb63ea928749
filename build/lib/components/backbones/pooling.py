"""One pooling layer for every backbone family: tokens of each frame -> one clip feature.

A family's ``tokens(video)`` returns ``(B, T, N, D)``: for each of T frames (or T' time steps of a
family that models time itself) N tokens, the first ``prefix`` of them class tokens, the rest a patch
grid (``grid``) or a plain sequence. ``TokenPool`` then applies, the same way for every family:

- ``pool`` over a frame's tokens: ``cls`` the class token (a family without one, Video Swin,
  averages its tokens: it has nothing else to summarise with), ``mean`` the non-class tokens' mean,
  ``grid`` the patch tokens averaged in ``pool_grid`` x ``pool_grid`` cells (cells concatenated);
- an optional ``project`` (a linear map, e.g. CLIP's projection; linear, so pooling first is exact);
- ``temporal`` over frames: ``mean``, ``concat`` (frames in order) or ``diff`` (consecutive
  differences, concatenated). A family that models time itself allows ``mean`` only.
``feature_dim`` is the resulting width; a combination a family cannot do is refused with a
ConfigError naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from einops import rearrange, reduce
from torch import nn

from components.backbones.config import BackboneConfig
from components.config import ConfigError


@dataclass(frozen=True)
class FrameTokens:
    """How a family's ``tokens`` output is laid out."""

    family: str
    width: int  # D, per token (after ``project``: ``project_dim``)
    prefix: int = 0  # leading class tokens
    grid: tuple[int, int] | None = None  # the patch grid of the other tokens; None = a sequence
    models_time: bool = False  # True: T is the family's own time axis (temporal mean only)
    project_dim: int = 0  # width after ``project`` (0 = no projection)


class TokenPool(nn.Module):
    """(B, T, N, D) tokens -> (B, feature_dim); ``frames`` stops before the temporal step."""

    def __init__(self, config: BackboneConfig, layout: FrameTokens, project: Callable | None = None) -> None:
        super().__init__()
        self.pool, self.g, self.temporal = config.pool, config.pool_grid, config.temporal
        self.layout, self.project = layout, project
        fam = layout.family
        if layout.models_time and config.temporal != "mean":
            raise ConfigError(f"model.backbone.temporal: {fam} models time itself; only 'mean' (the default) applies")
        if config.pool == "grid":
            if layout.grid is None:
                raise ConfigError(f"model.backbone.pool: grid needs a patch grid, and {fam}'s output tokens are a "
                                  f"sequence; use cls or mean")
            gh, gw = layout.grid
            if gh % config.pool_grid or gw % config.pool_grid:
                raise ConfigError(f"model.backbone.pool_grid: {config.pool_grid} does not divide the {gh}x{gw} "
                                  f"patch grid of {fam}")
        frame_dim = (layout.project_dim or layout.width) * (config.pool_grid**2 if config.pool == "grid" else 1)
        steps = {"mean": 1, "concat": config.num_frames, "diff": config.num_frames - 1}[config.temporal]
        self.frame_dim, self.feature_dim = frame_dim, frame_dim * steps

    def frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, N, D) -> (B, T, frame_dim): each frame's pooled (and projected) feature."""
        p = self.layout.prefix
        if self.pool == "cls" and p > 0:
            x = tokens[:, :, 0]  # b t d
        elif self.pool == "grid":
            gh, gw = self.layout.grid
            g = self.g
            x = reduce(tokens[:, :, p:], "b t (g1 h g2 w) d -> b t g1 g2 d", "mean", g1=g, g2=g, h=gh // g, w=gw // g)
            if self.project is not None:
                x = self.project(x)
            return rearrange(x, "b t g1 g2 d -> b t (g1 g2 d)")
        else:  # mean (and cls of a family without a class token)
            x = tokens[:, :, p:].mean(dim=2)  # b t d
        return self.project(x) if self.project is not None else x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.frames(tokens)  # b t f
        if self.temporal == "concat":
            return rearrange(x, "b t f -> b (t f)")
        if self.temporal == "diff":
            return rearrange(x[:, 1:] - x[:, :-1], "b t f -> b (t f)")  # (b, (t-1) f)
        return x.mean(dim=1)


class PooledBackbone(nn.Module):
    """Base of every family: ``tokens(video)`` then the shared ``pooling`` (no parameters of its own,
    so weights keys stay the family's). Subclasses set ``spec``, ``pooling`` (``init_pooling``)."""

    spec: object
    pooling: TokenPool

    def init_pooling(self, config: BackboneConfig, layout: FrameTokens, project: Callable | None = None) -> None:
        self.pooling = TokenPool(config, layout, project)
        self.spec.feature_dim = self.pooling.feature_dim

    def tokens(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) normalised video -> (B, T, N, D) tokens (see FrameTokens)."""
        raise NotImplementedError

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.pooling(self.tokens(video))
