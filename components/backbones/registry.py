"""Build a backbone by family name, from the family records (``components.backbone_family``).

A built backbone is a ``PooledBackbone`` (``pooling.py``): ``tokens`` turns normalised float video
(B, T, C, H, W) into per-frame tokens, the shared pooling turns those into clip features
(B, spec.feature_dim), and ``.spec`` (a BackboneSpec) tells adapter injection where blocks live.
A new family: one module with its PooledBackbone subclass, its weights loader and its
``register_family(BackboneFamily(...))``, and its ``register_module`` line in ``components/backbones/__init__.py``.
"""

from __future__ import annotations

from torch import nn

from components.backbone_family import families, family
from components.backbones.config import BackboneConfig
from components.config import ConfigError


def build_backbone(config: BackboneConfig) -> nn.Module:
    record = family(config.family)
    if record is None:
        raise ConfigError(f"model.backbone.family: unknown family {config.family!r}; known: {backbone_families()}")
    return record.build(config)


def backbone_families() -> list[str]:
    return sorted(families())
