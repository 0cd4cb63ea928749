"""open_clip CLIP towers as a video backbone family (``openclip_vit``), described once.

The visual tower runs frame by frame on batch-first tokens ``(B*T, 1 + H*W, C)``; a clip's feature
is each frame's projected class token averaged over time (M2-CLIP Eq. 3). The text tower of the same
model is described here too (``describe_openclip_text``) and used by ``components.m2clip``.

Layout pinned to open_clip 3.3 (checked by tests/components/backbones/test_openclip_backbone.py): blocks at
``transformer.resblocks[i]`` (``ResidualAttentionBlock``: ``ln_1, attn (nn.MultiheadAttention,
batch_first), ls_1, ln_2, mlp (c_fc, gelu, c_proj), ls_2``), called as ``r(x, attn_mask=...)`` or,
under gradient checkpointing, ``r(x, None, None, attn_mask)``.

Residual taps. Some adapters sit *before* a sub-layer on the residual stream: ``x = x + A(x)``, then
``x = x + attn(ln_1(x))`` (TED, before MHSA) or ``x = x + mlp(ln_2(x))`` (M2-CLIP's text adapter,
before the FFN). No open_clip submodule carries that stream: ``ln_1``/``ln_2`` feed only their own
branch, and wrapping the whole block would add the delta after it. So each block gets two identity
modules on the residual stream, ``pre_attn`` and ``pre_mlp`` (sites of the same names); an adapter
wrapped around an identity returns ``x + delta(x)``, exactly the papers' placement. The blocks'
class becomes ``TappedResidualAttentionBlock`` (same parameters, names and paths, so pretrained
state dicts and the ``attn``/``mlp``/``block`` sites are untouched).

Weights come only from a local file (``checkpoint``: an open_clip state dict, .safetensors/.bin/.pt,
an OpenAI CLIP TorchScript archive or a timm-layout CLIP image tower; read and converted by
``openclip_weights.py``, position embeddings resampled to ``img_size`` as open_clip does); names
with a hub schema are refused, so nothing is downloaded, and ``kwargs`` are architecture settings
only (``openclip_kwargs``), so no config can switch open_clip's own unpickling on.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import cache

import open_clip
import torch
from einops import rearrange
from open_clip.transformer import ResidualAttentionBlock, Transformer, VisionTransformer
from torch import nn

from components.backbone_family import BackboneFamily, register_family
from components.backbones.arch_kwargs import allowed_from_dataclass, allowed_from_signature, check_kwargs
from components.backbones.config import BackboneConfig
from components.backbones.fast_gelu import use_fast_quick_gelu
from components.backbones.fast_mha import use_fast_self_attention
from components.backbones.openclip_weights import (
    OPEN_CLIP_LAYOUT,
    TIMM_CLIP_LAYOUT,
    add_openclip_test_archs,
    convert_open_clip,
    guess_open_clip,
    load_open_clip,
)
from components.backbones.pooling import FrameTokens, PooledBackbone
from components.backbones.spec import BackboneSpec
from components.config import ConfigError
from components.token_layout import TokenLayout
from components.weights.reader import weights_present

add_openclip_test_archs()  # tiny test architectures, e.g. "vidpeft-tiny-clip"

# site name -> path relative to a block; pre_attn/pre_mlp are the residual taps described above
OPENCLIP_SITES = {"block": "", "attn": "attn", "mlp": "mlp", "pre_attn": "pre_attn", "pre_mlp": "pre_mlp"}


class TappedResidualAttentionBlock(ResidualAttentionBlock):
    """open_clip's block with identity taps on the residual stream before attention and before the MLP.

    ``forward(q_x)`` equals ``ResidualAttentionBlock.forward`` while the taps are identities. With
    ``k_x`` given it cross-attends (queries from ``q_x``, keys/values from ``k_x``), normalising the
    keys with ``ln_1`` (or ``ln_1_kv`` when the block has one), as M2-CLIP's CMLM block does.
    """

    pre_attn: nn.Module
    pre_mlp: nn.Module

    def forward(
        self,
        q_x: torch.Tensor,
        k_x: torch.Tensor | None = None,
        v_x: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.pre_attn(q_x)
        if k_x is None:
            a = self.attention(q_x=self.ln_1(x), attn_mask=attn_mask)
        else:
            norm_kv = getattr(self, "ln_1_kv", self.ln_1)
            v_x = k_x if v_x is None else v_x
            a = self.attention(q_x=self.ln_1(x), k_x=norm_kv(k_x), v_x=norm_kv(v_x), attn_mask=attn_mask)
        x = x + self.ls_1(a)
        x = self.pre_mlp(x)
        return x + self.ls_2(self.mlp(self.ln_2(x)))


def add_residual_taps(transformer: Transformer) -> None:
    """Turn every block of an open_clip ``Transformer`` into a ``TappedResidualAttentionBlock``."""
    for i, block in enumerate(transformer.resblocks):
        if isinstance(block, TappedResidualAttentionBlock):
            continue
        if type(block) is not ResidualAttentionBlock:
            raise ConfigError(
                f"model.backbone.name: open_clip block {i} is {type(block).__name__}; only the default "
                "ResidualAttentionBlock is supported (no qk_norm / scaled-cosine / custom blocks)"
            )
        block.__class__ = TappedResidualAttentionBlock
        block.pre_attn = nn.Identity()
        block.pre_mlp = nn.Identity()


@contextmanager
def quiet_random_init_warning(active: bool):
    """Hide open_clip's "initialized randomly" warning when a checkpoint is loaded afterwards."""
    flt = lambda record: "No pretrained weights loaded" not in record.getMessage()  # noqa: E731
    root = logging.getLogger()
    if active:
        root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def create_openclip(config: BackboneConfig, text: bool = True) -> nn.Module:
    """The whole open_clip CLIP model (both towers, fp32), weights from ``config.checkpoint`` only
    (``text=False``: only the image tower's weights are needed, e.g. a timm-layout CLIP tower)."""
    if ":" in config.name:
        raise ConfigError(f"model.backbone.name: {config.name!r}: hub/local-dir schemas are not supported; "
                          "use an architecture name and a local checkpoint file")
    if config.name not in open_clip.list_models():
        raise ConfigError(f"model.backbone.name: unknown open_clip architecture {config.name!r}")
    if config.checkpoint and not weights_present(config.checkpoint):
        raise FileNotFoundError(f"model.backbone.checkpoint: weights file not found: {config.checkpoint}")
    # open_clip's "No pretrained weights loaded ... initialized randomly" is about its own download
    # switch, which is never used here: weights come from config.checkpoint (below) or from a run's
    # weights file that the caller loads next; from-scratch pretraining is the config's own choice
    with quiet_random_init_warning(True):
        model = open_clip.create_model(
            config.name,
            pretrained=None,
            pretrained_image=False,
            pretrained_text=False,
            force_image_size=config.img_size,
            device=torch.get_default_device(),  # "meta" when a driver only checks shapes (preflight)
            **openclip_kwargs(config.kwargs),  # architecture settings only: never a loading switch
        )
    if not isinstance(getattr(model, "visual", None), VisionTransformer) or not hasattr(model, "token_embedding"):
        raise ConfigError(
            f"model.backbone.name: {config.name!r} is not a plain open_clip CLIP with a ViT image tower "
            f"and the built-in text transformer (got {type(model).__name__})"
        )
    if config.checkpoint:
        load_open_clip(model, config.checkpoint, config.name, text=text)
    add_residual_taps(model.visual.transformer)
    add_residual_taps(model.transformer)
    use_fast_self_attention(model)  # same weights; see fast_mha.py for the slow path it avoids
    use_fast_quick_gelu(model)  # same function, fewer kernels (fast_gelu.py)
    return model.float()


def _heads(transformer: Transformer) -> int:
    return transformer.resblocks[0].attn.num_heads


def describe_openclip_visual(visual: VisionTransformer, prefix: str) -> BackboneSpec:
    """Blocks at ``transformer.resblocks[i]``; frames of ``1 + H*W`` tokens (class token first)."""
    n = len(visual.transformer.resblocks)
    layout = TokenLayout(kind="frames", grid=tuple(visual.grid_size), num_prefix_tokens=1)
    pre = open_clip.get_model_preprocess_cfg(visual)
    return BackboneSpec(
        family="openclip_vit",
        feature_dim=visual.output_dim,
        mean=tuple(pre.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(pre.get("std", open_clip.OPENAI_DATASET_STD)),
        blocks=[f"{prefix}transformer.resblocks.{i}" for i in range(n)],
        sites=dict(OPENCLIP_SITES),
        block_dims=[visual.transformer.width] * n,
        block_heads=[_heads(visual.transformer)] * n,
        layouts=[layout] * n,
        total_params=sum(p.numel() for p in visual.parameters()),
        residual_branches=["ls_1", "ls_2"],  # LayerScale (or Identity) on the attention and MLP branches
        stem=[f"{prefix}{name}" for name in ("class_embedding", "positional_embedding", "conv1", "ln_pre")],
    )


def describe_openclip_text(transformer: Transformer, prefix: str, feature_dim: int, total_params: int) -> BackboneSpec:
    """The text tower's blocks (same block type and sites; tokens are a plain sequence)."""
    n = len(transformer.resblocks)
    return BackboneSpec(
        family="openclip_text",
        feature_dim=feature_dim,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        blocks=[f"{prefix}transformer.resblocks.{i}" for i in range(n)],
        sites=dict(OPENCLIP_SITES),
        block_dims=[transformer.width] * n,
        block_heads=[_heads(transformer)] * n,
        layouts=[TokenLayout(kind="sequence")] * n,
        total_params=total_params,
    )


class OpenClipFrameViT(PooledBackbone):
    """(B, T, C, H, W) -> per-frame CLIP image tower tokens (after ``ln_post``) -> the shared pooling,
    with CLIP's projection applied to each pooled vector (``pooling.py``)."""

    def __init__(self, config: BackboneConfig, visual: VisionTransformer | None = None) -> None:
        super().__init__()
        if visual is None:
            visual = create_openclip(config, text=False).visual  # the text tower is dropped here
        if visual.attn_pool is not None or visual.final_ln_after_pool or visual.pool_type != "tok":
            raise ConfigError(f"model.backbone.name: {config.name!r} pools its image tokens its own way "
                              f"(attention pool / {visual.pool_type!r}); openclip_vit needs class-token CLIP towers")
        self.visual = visual
        self.spec = describe_openclip_visual(visual, prefix="visual.")
        layout = FrameTokens("openclip_vit", visual.transformer.width, prefix=1, grid=tuple(visual.grid_size),
                             project_dim=visual.output_dim if visual.proj is not None else 0)
        self.init_pooling(config, layout, self._project if visual.proj is not None else None)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.visual.proj  # into the joint image-text space

    def tokens(self, video: torch.Tensor) -> torch.Tensor:
        frames = rearrange(video, "b t c h w -> (b t) c h w")
        x = self.visual.ln_post(self.visual.transformer(self.visual._embeds(frames)))  # (b t) (1 + h w) c
        return rearrange(x, "(b t) n c -> b t n c", t=video.shape[1])

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings in the joint space: (B, T, C, H, W) -> (B, T, D)."""
        return self.pooling.frames(self.tokens(video))


@cache
def openclip_allowed() -> tuple[dict, dict[str, dict]]:
    """CLIP's own settings, open_clip.create_model's architecture overrides, and the two tower configs."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    top = allowed_from_signature(CLIP.__init__)
    top.update({k: v for k, v in allowed_from_signature(open_clip.create_model).items() if k.startswith("force_")})
    top.pop("force_image_size", None)  # model.backbone.img_size
    for name in ("vision_cfg", "text_cfg"):
        top.pop(name, None)
    return top, {"vision_cfg": allowed_from_dataclass(CLIPVisionCfg), "text_cfg": allowed_from_dataclass(CLIPTextCfg)}


def openclip_kwargs(kwargs: dict) -> dict:
    top, nested = openclip_allowed()
    return check_kwargs(kwargs, top, "openclip_vit", nested=nested)


FAMILY = register_family(BackboneFamily(
    name="openclip_vit", build=OpenClipFrameViT, check_kwargs=openclip_kwargs, sizes=open_clip.list_models,
    layouts=(OPEN_CLIP_LAYOUT, TIMM_CLIP_LAYOUT), convert=convert_open_clip, guess_size=guess_open_clip,
))
