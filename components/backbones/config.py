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
    pool: str = cfg("cls", "per-frame token pooling: cls or mean (then averaged over time)")

    def __post_init__(self) -> None:
        if self.img_size <= 0 or self.num_frames <= 0:
            raise ValueError("img_size and num_frames must be positive")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be cls or mean, got {self.pool!r}")
