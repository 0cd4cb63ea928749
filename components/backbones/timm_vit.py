"""timm ViT applied frame by frame, with features averaged over time."""

from __future__ import annotations

import timm
import torch
from einops import rearrange, reduce
from torch import nn

from components.adapters.base import TokenLayout
from components.backbones.arch_kwargs import timm_vit_kwargs
from components.backbones.config import BackboneConfig
from components.backbones.registry import register_backbone
from components.backbones.spec import BackboneSpec
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
    )


def create_timm_vit(config: BackboneConfig) -> nn.Module:
    kwargs = timm_vit_kwargs(config.kwargs)  # architecture settings only: never a loading switch
    vit = timm.create_model(config.name, pretrained=False, num_classes=0, img_size=config.img_size, **kwargs)
    if config.checkpoint:
        load_timm_vit(vit, config.checkpoint, config.name)  # resamples position embeddings to img_size
    return vit


class TimmFrameViT(nn.Module):
    """(B, T, C, H, W) -> per-frame ViT -> pooled token per frame -> mean (B, D) or concat (B, T*D) over T."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.vit = create_timm_vit(config)
        self.pool = config.pool
        self.pool_grid = config.pool_grid
        self.temporal = config.temporal
        self.spec = describe_timm_vit(self.vit, prefix="vit.")
        if config.pool == "grid":
            gh, gw = self.spec.layouts[0].grid
            if gh % config.pool_grid or gw % config.pool_grid:
                raise ValueError(f"pool_grid {config.pool_grid} does not divide the {gh}x{gw} patch grid")
            self.spec.feature_dim *= config.pool_grid**2
        if config.temporal == "concat":  # the head sees every frame's feature, in order
            self.spec.feature_dim *= config.num_frames
        elif config.temporal == "diff":
            self.spec.feature_dim *= config.num_frames - 1

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        t = video.shape[1]
        frames = rearrange(video, "b t c h w -> (b t) c h w")
        tokens = self.vit.forward_features(frames)  # (b t) n d
        patches = tokens[:, self.vit.num_prefix_tokens :]  # (b t) (h w) d
        if self.pool == "cls" and self.vit.num_prefix_tokens > 0:
            per_frame = tokens[:, 0]
        elif self.pool == "grid":
            gh, gw = self.spec.layouts[0].grid
            g = self.pool_grid
            per_frame = reduce(patches, "n (g1 h g2 w) d -> n (g1 g2 d)", "mean", g1=g, g2=g, h=gh // g, w=gw // g)
        else:
            per_frame = patches.mean(dim=1)
        if self.temporal == "concat":
            return rearrange(per_frame, "(b t) d -> b (t d)", t=t)
        if self.temporal == "diff":
            seq = rearrange(per_frame, "(b t) d -> b t d", t=t)
            return rearrange(seq[:, 1:] - seq[:, :-1], "b t d -> b (t d)")  # (b, (t-1) d)
        return reduce(per_frame, "(b t) d -> b d", "mean", t=t)


@register_backbone("timm_vit")
def build_timm_frame_vit(config: BackboneConfig) -> nn.Module:
    return TimmFrameViT(config)
