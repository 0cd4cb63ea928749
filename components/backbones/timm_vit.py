"""timm ViT applied frame by frame (family ``timm_vit``); its per-frame tokens go through the shared
pooling (``pooling.py``). Weights: timm files, and open_clip / OpenAI CLIP image towers through timm's
own checkpoint filter; the family record is at the end."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import timm
import torch
from einops import rearrange
from torch import nn

from components.backbone_family import BackboneFamily, PublishedLayout, register_family
from components.backbones.arch_kwargs import allowed_from_signature, check_kwargs
from components.backbones.config import BackboneConfig
from components.backbones.pooling import FrameTokens, PooledBackbone
from components.backbones.spec import TIMM_RESIDUAL_BRANCHES, TIMM_STEM, BackboneSpec
from components.token_layout import TokenLayout
from components.weights.families import read_for_family
from components.weights.identify import count_indices
from components.weights.openai_clip import quick_gelu_note
from components.weights.reader import DEFAULT_KEY, WeightsError
from components.weights.strict import LoadReport, load_strict


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


@cache
def timm_vit_allowed() -> dict[str, Any]:
    from timm.models.vision_transformer import VisionTransformer

    return allowed_from_signature(VisionTransformer.__init__)


def timm_vit_kwargs(kwargs: dict, family: str = "timm_vit", extra: dict[str, Any] | None = None) -> dict:
    """``extra``: the family's own settings beside the timm ViT's (vivit's temporal transformer)."""
    return check_kwargs(kwargs, {**timm_vit_allowed(), **(extra or {})}, family)


# ---- weights: published layouts, size guess, loader ------------------------------------------------

# timm ViT sizes: (width, depth) -> size word in timm's model names
VIT_SIZES = {(192, 12): "tiny", (384, 12): "small", (768, 12): "base", (1024, 24): "large", (1280, 32): "huge"}


def guess_timm_vit(state: dict[str, torch.Tensor]) -> str | None:
    w = state.get("patch_embed.proj.weight")
    if w is None:
        return None
    size = VIT_SIZES.get((w.shape[0], count_indices(state, r"blocks\.(\d+)\.")))
    if size is None:
        return None
    clip = "_clip" if "norm_pre.weight" in state else ""
    names = timm.list_models(f"vit_{size}_patch{w.shape[-1]}{clip}_*")
    plain = [n for n in names if re.fullmatch(rf"vit_{size}_patch{w.shape[-1]}{clip}_\d+", n)]
    return (plain or names or [None])[0]


def timm_filter(state: dict[str, torch.Tensor], vit: nn.Module, where: str) -> dict[str, torch.Tensor]:
    """timm's own checkpoint filter (open_clip / OpenAI CLIP towers to timm's layout, position
    embeddings and patch kernels resampled); its assertions on shapes it cannot adapt become one error."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        return checkpoint_filter_fn(state, vit)
    except (AssertionError, RuntimeError, ValueError, KeyError) as e:
        raise WeightsError(f"{where}: timm cannot adapt this file to the model ({type(e).__name__}: {e}); "
                           "check model.backbone.name / kwargs against `vidpeft weights inspect`") from None


def load_timm_vit(vit: nn.Module, path, name: str, *, key_hint: str = DEFAULT_KEY, quiet: bool = False) -> LoadReport:
    """timm files; open_clip / OpenAI CLIP files and position-embedding resampling through timm's
    own checkpoint filter (what ``timm.create_model(pretrained=...)`` applies)."""
    wf, where, notes = read_for_family(path, key_hint, "timm_vit")
    notes += quick_gelu_note(wf, vit, "timm_vit", name)
    state = wf.tensors
    pos = state.get("pos_embed", state.get("visual.positional_embedding"))
    patch = state.get("patch_embed.proj.weight", state.get("visual.conv1.weight"))
    if "visual.conv1.weight" in state:
        notes.append("converted open_clip / OpenAI CLIP image tower to timm's layout")
    state = timm_filter(state, vit, where)
    own = vit.state_dict()
    if pos is not None and "pos_embed" in own and tuple(own["pos_embed"].shape[-2:]) != tuple(pos.shape[-2:]):
        notes.append(f"resampled pos_embed from {pos.shape[-2]} to {own['pos_embed'].shape[1]} tokens")
    kernel = own.get("patch_embed.proj.weight")
    if patch is not None and kernel is not None and patch.shape[-2:] != kernel.shape[-2:]:
        notes.append("resampled patch_embed.proj.weight from {}x{} to {}x{} (timm's FlexiViT resampling)".format(
            *patch.shape[-2:], *kernel.shape[-2:]))
    return load_strict(vit, state, where=where, family="timm_vit", name=name, notes=notes, quiet=quiet)


def is_timm_vit(state: dict[str, torch.Tensor]) -> bool:
    return "patch_embed.proj.weight" in state and any(k.startswith("blocks.") for k in state)


TIMM_LAYOUT = PublishedLayout("timm_vit", "timm ViT (blocks.N.attn.qkv)", is_timm_vit, order=90)

FAMILY = register_family(BackboneFamily(
    name="timm_vit", build=TimmFrameViT, check_kwargs=timm_vit_kwargs, sizes=lambda: timm.list_models("vit_*"),
    layouts=(TIMM_LAYOUT,), reads=("timm_clip", "open_clip"), guess_size=guess_timm_vit,
))
