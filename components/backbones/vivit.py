"""ViViT factorised encoder (Arnab et al. 2021, model 2) as a frozen backbone, family "vivit".

A timm ViT (the spatial transformer) encodes each frame on its own, giving one class token per frame;
a small temporal transformer (timm ``Block``s) then runs over the T frame tokens with a learned
temporal position embedding and its own class token, whose final state is the clip feature.

Adapter sites: ``spec.blocks`` lists the spatial blocks first, then the temporal blocks, so a block
index i < spatial depth targets the spatial transformer and i >= spatial depth the temporal one
(``layers: [-1]`` = the last temporal block). Spatial blocks have the per-frame ``frames`` layout
(class token + patch grid); temporal blocks the ``sequence`` layout (temporal class token + T frames).

Config: ``name`` is the timm ViT of the spatial transformer; ``kwargs`` go to it, except
``temporal_depth`` (default 4, ViViT-B's), ``temporal_heads`` (default: the spatial head count) and
``temporal_mlp_ratio`` (default 4). Weights: a file of this module's own state dict (keys
``spatial.*`` and ``temporal.*``) loads everything; a plain timm ViT file loads the spatial transformer
only and leaves the temporal one at random init (then it must train: use ``finetune: full`` or adapters
plus a trainable temporal part). ``num_frames`` fixes the temporal position embedding length.
"""

from __future__ import annotations

import dataclasses

import timm
import torch
from einops import rearrange, repeat
from timm.models.vision_transformer import Block
from torch import nn

from components.backbone_family import BackboneFamily, PublishedLayout, register_family
from components.backbones.config import BackboneConfig
from components.backbones.pooling import FrameTokens, PooledBackbone
from components.backbones.spec import TIMM_RESIDUAL_BRANCHES, TIMM_STEM, BackboneSpec
from components.backbones.timm_vit import create_timm_vit, timm_filter, timm_vit_kwargs
from components.token_layout import TokenLayout
from components.weights.families import read_for_family
from components.weights.openai_clip import quick_gelu_note
from components.weights.reader import DEFAULT_KEY
from components.weights.strict import LoadReport, load_strict, resize_1d_pos

TEMPORAL_KEYS = {"temporal_depth": 4, "temporal_heads": 1, "temporal_mlp_ratio": 4.0}  # name -> kind of value


class TemporalTransformer(nn.Module):
    """(B, T, D) frame tokens -> [CLS; frames] + position embedding -> blocks -> norm -> (B, 1+T, D)."""

    def __init__(self, dim: int, depth: int, num_heads: int, num_frames: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_frames, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.blocks = nn.Sequential(
            *[Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(
                f"vivit: clip has {frames.shape[1]} frames, the temporal transformer was built for "
                f"{self.pos_embed.shape[1] - 1} (model.backbone.num_frames)"
            )
        cls = repeat(self.cls_token, "1 1 d -> b 1 d", b=frames.shape[0])
        x = torch.cat([cls, frames], dim=1) + self.pos_embed  # b (1+t) d
        return self.norm(self.blocks(x))


class ViViT(PooledBackbone):
    """Spatial ViT per frame -> frame class tokens -> temporal transformer -> (B, 1, 1+T, D) tokens
    (its class token first), pooled by the shared layer: ``cls`` or ``mean`` of the frame tokens."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        timm_vit_kwargs(config.kwargs, "vivit", extra=TEMPORAL_KEYS)  # architecture settings only
        kwargs = {k: v for k, v in config.kwargs.items() if k not in TEMPORAL_KEYS}
        spatial_cfg = dataclasses.replace(config, kwargs=kwargs, checkpoint=None)
        self.spatial = create_timm_vit(spatial_cfg)
        dim = self.spatial.embed_dim
        heads = self.spatial.blocks[0].attn.num_heads
        t_depth = int(config.kwargs.get("temporal_depth", 4))
        t_heads = int(config.kwargs.get("temporal_heads", heads))
        self.temporal = TemporalTransformer(
            dim, t_depth, t_heads, config.num_frames, float(config.kwargs.get("temporal_mlp_ratio", 4.0))
        )
        if config.checkpoint:
            load_vivit(self, config.checkpoint, config.name)
        self.spec = describe_vivit(self, prefix="")
        self.init_pooling(config, FrameTokens("vivit", dim, prefix=1, models_time=True))

    def tokens(self, video: torch.Tensor) -> torch.Tensor:
        t = video.shape[1]
        frames = rearrange(video, "b t c h w -> (b t) c h w")
        tokens = self.spatial.forward_features(frames)  # (b t) n d
        p = self.spatial.num_prefix_tokens
        per_frame = tokens[:, 0] if p > 0 else tokens.mean(dim=1)  # (b t) d: each frame's class token
        x = self.temporal(rearrange(per_frame, "(b t) d -> b t d", t=t))  # b (1+t) d
        return x[:, None]  # b 1 (1+t) d: one time step, the temporal transformer's tokens


def describe_vivit(model: ViViT, prefix: str) -> BackboneSpec:
    vit, temporal = model.spatial, model.temporal
    ns, nt = len(vit.blocks), len(temporal.blocks)
    frames = TokenLayout(kind="frames", grid=tuple(vit.patch_embed.grid_size), num_prefix_tokens=vit.num_prefix_tokens)
    sequence = TokenLayout(kind="sequence", num_prefix_tokens=1)
    cfg = getattr(vit, "pretrained_cfg", {}) or {}
    return BackboneSpec(
        family="vivit",
        feature_dim=vit.embed_dim,
        mean=tuple(cfg.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(cfg.get("std", (0.5, 0.5, 0.5))),
        blocks=[f"{prefix}spatial.blocks.{i}" for i in range(ns)] + [f"{prefix}temporal.blocks.{j}" for j in range(nt)],
        sites={"block": "", "attn": "attn", "mlp": "mlp"},
        block_dims=[vit.embed_dim] * (ns + nt),
        block_heads=[vit.blocks[0].attn.num_heads] * ns + [b.attn.num_heads for b in temporal.blocks],
        layouts=[frames] * ns + [sequence] * nt,
        total_params=sum(p.numel() for p in model.parameters()),
        residual_branches=list(TIMM_RESIDUAL_BRANCHES),  # timm Blocks, spatial and temporal
        stem=[f"{prefix}spatial.{name}" for name in TIMM_STEM],
    )


def load_vivit(model: nn.Module, path, name: str, *, key_hint: str = DEFAULT_KEY, quiet: bool = False) -> LoadReport:
    """A vidpeft ViViT file loads everything (temporal positions resized to ``num_frames``); a
    timm ViT file loads the spatial transformer only."""
    wf, where, notes = read_for_family(path, key_hint, "vivit")
    state = wf.tensors
    if VIVIT_LAYOUT.detect(state):
        notes += resize_1d_pos(state, model.state_dict(), "temporal.pos_embed")
        return load_strict(model, state, where=where, family="vivit", name=name, notes=notes, quiet=quiet)
    notes += quick_gelu_note(wf, model.spatial, "timm_vit", name)
    notes.append("timm ViT file: loads the spatial transformer; the temporal one stays at random init")
    state = timm_filter(state, model.spatial, where)
    return load_strict(model.spatial, state, where=where, family="timm_vit", name=name, notes=notes, quiet=quiet)


VIVIT_LAYOUT = PublishedLayout("vivit", "vidpeft ViViT (spatial.*, temporal.*)",
                               lambda state: any(k.startswith("spatial.blocks.") for k in state), order=40)

FAMILY = register_family(BackboneFamily(
    name="vivit", build=ViViT, check_kwargs=lambda kw: timm_vit_kwargs(kw, "vivit", extra=TEMPORAL_KEYS),
    sizes=lambda: timm.list_models("vit_*"), layouts=(VIVIT_LAYOUT,), reads=("timm_vit", "timm_clip"),
))
