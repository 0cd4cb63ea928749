"""Backbone configuration shared by every family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.config import cfg


@dataclass
class BackboneConfig:
    family: str = cfg("timm_vit", "backbone family: a registered name (timm_vit, ...)")
    name: str = cfg("vit_tiny_patch16_224", "architecture name within the family (timm model name, ...)")
    checkpoint: str | None = cfg(None, "local pretrained weights (.safetensors or torch file); none = random init")
    img_size: int = cfg(64, "input frame size (square), pixels")
    num_frames: int = cfg(8, "frames per clip fed to the backbone")
    kwargs: dict[str, Any] = cfg({}, "extra constructor arguments (tiny test models: depth, embed_dim, ...)")
    pool: str = cfg("cls", "per-frame token pooling (components/backbones/pooling.py): cls (the class token; "
                    "video_swin has none and averages its tokens), mean, or grid (patch tokens averaged in "
                    "pool_grid^2 cells; not vivit)")
    pool_grid: int = cfg(2, "cells per side for pool=grid (keeps coarse position, which motion needs)")
    temporal: str = cfg("mean", "mean over time (as the papers), concat (keeps frame order) or diff (concatenated "
                        "differences of consecutive frames: static content cancels); families that model time "
                        "themselves (vivit, video_swin) take mean only")

    def __post_init__(self) -> None:
        if self.img_size <= 0 or self.num_frames <= 0:
            raise ValueError("img_size and num_frames must be positive")
        if self.pool not in ("cls", "mean", "grid"):
            raise ValueError(f"pool must be cls, mean or grid, got {self.pool!r}")
        if self.pool_grid < 1:
            raise ValueError(f"pool_grid must be positive, got {self.pool_grid}")
        if self.temporal not in ("mean", "concat", "diff"):
            raise ValueError(f"temporal must be mean, concat or diff, got {self.temporal!r}")
        if self.temporal == "diff" and self.num_frames < 2:
            raise ValueError("temporal=diff needs num_frames >= 2")
