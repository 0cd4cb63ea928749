"""Backbone families by name: each family module registers a builder ``(BackboneConfig) -> nn.Module``.

A built backbone is a ``PooledBackbone`` (``pooling.py``): ``tokens`` turns normalised float video
(B, T, C, H, W) into per-frame tokens, the shared pooling turns those into clip features
(B, spec.feature_dim), and ``.spec`` (a BackboneSpec) tells adapter injection where blocks live.
A new family: one module with its PooledBackbone subclass and ``@register_backbone("name")``, and
its import line in ``components/backbones/__init__.py``.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from components.backbones.config import BackboneConfig
from components.config import ConfigError

_BUILDERS: dict[str, Callable[[BackboneConfig], nn.Module]] = {}


def register_backbone(family: str):
    def deco(fn: Callable[[BackboneConfig], nn.Module]):
        _BUILDERS[family] = fn
        return fn

    return deco


def build_backbone(config: BackboneConfig) -> nn.Module:
    if config.family not in _BUILDERS:
        raise ConfigError(f"model.backbone.family: unknown family {config.family!r}; known: {sorted(_BUILDERS)}")
    return _BUILDERS[config.family](config)


def backbone_families() -> list[str]:
    return sorted(_BUILDERS)
