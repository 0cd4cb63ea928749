"""VideoMAE (Tong et al. 2022) as a frozen backbone, family "videomae": a plain ViT over space-time.

A clip (B, T, C, H, W) is cut into tubelets of ``tubelet_size`` frames x ``patch_size``^2 pixels
(a Conv3d), giving N = T/2 * H/16 * W/16 tokens with no class token; fixed sinusoidal position
embeddings (not learned, so any clip size or frame count works without resizing) are added and
every block attends jointly over all N tokens. The clip feature is ``fc_norm`` of the token mean
(``use_mean_pooling``, the fine-tuned checkpoints) or the token mean after ``norm`` (pre-training
encoders: ``kwargs: {use_mean_pooling: false}``).

Blocks are timm ``Block``s (``blocks[i].attn`` with a fused ``qkv``, ``blocks[i].mlp``), so the
attention internals adapters use are timm's. VideoMAE's attention has a query and a value bias but
no key bias; on load they become the fused ``qkv.bias`` with a zero key part (the same function).
Token layout at every block: ``sequence`` (B, N, C), tokens in (t, h, w) order; MHVA's groups are
then contiguous runs of tokens, i.e. stretches of time (VideoMAE has no spatial windows to follow).

Sizes (``name``): videomae_small / base / large / huge (ViT-S/B/L/H, patch 16, tubelet 2).
``kwargs`` override them (embed_dim, depth, num_heads, patch_size, tubelet_size, mlp_ratio,
use_mean_pooling) for tiny test models. Weights: the original release files (fine-tuned
``checkpoint.pth`` or pre-trained ``encoder.*`` files) and Hugging Face transformers files
(``videomae.*`` / ``encoder.layer.N``), converted on load (``components.weights``).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from einops import rearrange
from timm.models.vision_transformer import Block
from torch import nn

from components.adapters.base import TokenLayout
from components.backbones.config import BackboneConfig
from components.backbones.registry import register_backbone
from components.backbones.spec import TIMM_RESIDUAL_BRANCHES, BackboneSpec
from components.config import ConfigError
from components.weights.families import load_videomae
from components.weights.sizes import VIDEOMAE_SIZES as VARIANTS

DEFAULTS = dict(patch_size=16, tubelet_size=2, mlp_ratio=4.0, use_mean_pooling=True)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sinusoid_positions(n: int, dim: int) -> torch.Tensor:
    """(1, n, dim) fixed table: position p, channel j -> sin/cos(p / 10000^(2*(j//2)/dim)), sin on even j."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, 2 * (torch.arange(dim) // 2) / dim).to(torch.float64)[None, :]
    angles = pos / rate
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float().unsqueeze(0)


class TubeletEmbed(nn.Module):
    def __init__(self, dim: int, patch: int, tubelet: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(3, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.proj(rearrange(video, "b t c h w -> b c t h w"))  # b d t' h' w'
        return rearrange(x, "b d t h w -> b (t h w) d")


class VideoMAE(nn.Module):
    """(B, T, C, H, W) -> tubelet tokens + sinusoid positions -> blocks -> mean-pooled (B, D)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        if config.name not in VARIANTS:
            raise ConfigError(f"model.backbone.name: videomae knows {sorted(VARIANTS)}, not {config.name!r}")
        if config.temporal != "mean":
            raise ConfigError("model.backbone.temporal: videomae models time itself; only 'mean' (the default) applies")
        if config.pool == "grid":  # tubelet tokens span frames: there is no per-frame grid to keep
            raise ConfigError("model.backbone.pool: videomae pools all its tokens (no class token, no frame grid): "
                              "use mean (cls means the same here)")
        arch = {**DEFAULTS, **VARIANTS[config.name], **config.kwargs}
        unknown = set(arch) - set(DEFAULTS) - {"embed_dim", "depth", "num_heads"}
        if unknown:
            raise ConfigError(f"model.backbone.kwargs: videomae does not take {sorted(unknown)}")
        p, tub, dim = int(arch["patch_size"]), int(arch["tubelet_size"]), int(arch["embed_dim"])
        if config.img_size % p or config.num_frames % tub:
            raise ConfigError(f"model.backbone: img_size {config.img_size} must be a multiple of patch_size {p} "
                              f"and num_frames {config.num_frames} of tubelet_size {tub}")
        self.grid = (config.num_frames // tub, config.img_size // p, config.img_size // p)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = TubeletEmbed(dim, p, tub)
        self.register_buffer("pos_embed", sinusoid_positions(math.prod(self.grid), dim), persistent=False)
        self.blocks = nn.Sequential(*[Block(dim, int(arch["num_heads"]), mlp_ratio=float(arch["mlp_ratio"]),
                                            qkv_bias=True, norm_layer=norm) for _ in range(int(arch["depth"]))])
        self.use_mean_pooling = bool(arch["use_mean_pooling"])
        self.norm = nn.Identity() if self.use_mean_pooling else norm(dim)
        self.fc_norm = norm(dim) if self.use_mean_pooling else nn.Identity()
        if config.checkpoint:
            load_videomae(self, config.checkpoint, config.name)
        self.spec = describe_videomae(self, dim, int(arch["num_heads"]))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(video)  # b (t' h' w') d
        if x.shape[1] != self.pos_embed.shape[1]:  # another clip size than configured: a fresh table
            pos = sinusoid_positions(x.shape[1], x.shape[2]).to(x)
        else:
            pos = self.pos_embed.to(x.dtype)
        x = self.norm(self.blocks(x + pos))
        return self.fc_norm(x.mean(dim=1))  # b d


def describe_videomae(model: VideoMAE, dim: int, heads: int) -> BackboneSpec:
    n = len(model.blocks)
    layout = TokenLayout(kind="sequence", num_prefix_tokens=0)
    return BackboneSpec(
        family="videomae",
        feature_dim=dim,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        blocks=[f"blocks.{i}" for i in range(n)],
        sites={"block": "", "attn": "attn", "mlp": "mlp"},
        block_dims=[dim] * n,
        block_heads=[heads] * n,
        layouts=[layout] * n,
        total_params=sum(p.numel() for p in model.parameters()),
        residual_branches=list(TIMM_RESIDUAL_BRANCHES),  # timm Blocks
        stem=["patch_embed"],
    )


@register_backbone("videomae")
def build_videomae(config: BackboneConfig) -> nn.Module:
    return VideoMAE(config)
