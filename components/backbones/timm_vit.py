"""timm ViT applied frame by frame; its per-frame tokens go through the shared pooling (``pooling.py``)."""

from __future__ import annotations

import timm
import torch
from einops import rearrange
from torch import nn

from components.adapters.base import TokenLayout
from components.backbones.arch_kwargs import timm_vit_kwargs
from components.backbones.config import BackboneConfig
from components.backbones.pooling import FrameTokens, PooledBackbone
from components.backbones.registry import register_backbone
from components.backbones.spec import TIMM_RESIDUAL_BRANCHES, TIMM_STEM, BackboneSpec
from components.weights.families import load_timm_vit


def describe_timm_vit(vit: nn.Module, prefix: str) -> BackboneSpec:
    """Where a timm VisionTransformer keeps its blocks: ``blocks[i].attn`` (qkv/proj), ``blocks[i].mlp``."""
    n = len(vit.blocks)
    layout = TokenLayout(kind="frames", grid=tuple(vit.patch_embed.grid_size), num_prefix_tokens=vit.num_prefix_tokens)
    cfg = getattr(vit, "pretrained_cfg", {}) or {}
    return BackboneSpec(
        family="timm_vit",
        feature_dim=vit.num_features,
        mean=tuple(cfg.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(cfg.get("std", (0.5, 0.5, 0.5))),
        blocks=[f"{prefix}blocks.{i}" for i in range(n)],
        sites={"block": "", "attn": "attn", "mlp": "mlp"},
        block_dims=[vit.embed_dim] * n,
        block_heads=[vit.blocks[0].attn.num_heads] * n,
        layouts=[layout] * n,
        total_params=sum(p.numel() for p in vit.parameters()),
        checkpoint_root=prefix,
        residual_branches=list(TIMM_RESIDUAL_BRANCHES),
        stem=[prefix + name for name in TIMM_STEM],
    )


def create_timm_vit(config: BackboneConfig) -> nn.Module:
    kwargs = timm_vit_kwargs(config.kwargs)  # architecture settings only: never a loading switch
    vit = timm.create_model(config.name, pretrained=False, num_classes=0, img_size=config.img_size, **kwargs)
    if config.checkpoint:
        load_timm_vit(vit, config.checkpoint, config.name)  # resamples position embeddings to img_size
    return vit


class TimmFrameViT(PooledBackbone):
    """(B, T, C, H, W) -> per-frame ViT tokens (B, T, N, D) -> the shared pooling (``pooling.py``)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.vit = create_timm_vit(config)
        self.spec = describe_timm_vit(self.vit, prefix="vit.")
        layout = self.spec.layouts[0]
        self.init_pooling(config, FrameTokens("timm_vit", self.vit.num_features, layout.num_prefix_tokens, layout.grid))

    def tokens(self, video: torch.Tensor) -> torch.Tensor:
        frames = rearrange(video, "b t c h w -> (b t) c h w")
        return rearrange(self.vit.forward_features(frames), "(b t) n d -> b t n d", t=video.shape[1])


@register_backbone("timm_vit")
def build_timm_frame_vit(config: BackboneConfig) -> nn.Module:
    return TimmFrameViT(config)
