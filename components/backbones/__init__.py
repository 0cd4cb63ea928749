"""Backbone families; importing this package registers the built-in ones (one line each below)."""

from components.backbones.config import BackboneConfig
from components.backbone_family import BackboneFamily, PublishedLayout, register_family
from components.backbones.registry import backbone_families, build_backbone
from components.backbones.spec import BackboneSpec
from components.backbones import timm_vit  # noqa: F401  (registers "timm_vit")
from components.backbones import video_swin  # noqa: F401  (registers "video_swin")
from components.backbones import vivit  # noqa: F401  (registers "vivit")
from components.backbones import openclip_vit  # noqa: F401  (registers "openclip_vit")
from components.backbones import videomae  # noqa: F401  (registers "videomae")

__all__ = ["BackboneConfig", "BackboneFamily", "BackboneSpec", "PublishedLayout", "backbone_families", "build_backbone",
           "register_family"]
