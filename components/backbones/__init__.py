"""Backbone families; importing this package registers the built-in ones (one line each below).

A family's module (and its library: timm, open_clip) is imported when the family is first needed
(``components.backbone_family.family``), not here.
"""

from components.backbones.config import BackboneConfig
from components.backbone_family import BackboneFamily, PublishedLayout, register_family, register_module
from components.backbones.registry import backbone_families, build_backbone
from components.backbones.spec import BackboneSpec

register_module("timm_vit", "components.backbones.timm_vit")
register_module("video_swin", "components.backbones.video_swin")
register_module("vivit", "components.backbones.vivit")
register_module("openclip_vit", "components.backbones.openclip_vit")
register_module("videomae", "components.backbones.videomae")

__all__ = ["BackboneConfig", "BackboneFamily", "BackboneSpec", "PublishedLayout", "backbone_families", "build_backbone",
           "register_family"]
