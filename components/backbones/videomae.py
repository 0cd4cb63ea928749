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
import re
from functools import partial

import torch
from einops import rearrange
from timm.models.vision_transformer import Block
from torch import nn

from components.backbone_family import BackboneFamily, PublishedLayout, register_family
from components.backbones.arch_kwargs import check_kwargs
from components.backbones.config import BackboneConfig
from components.backbones.spec import TIMM_RESIDUAL_BRANCHES, BackboneSpec
from components.config import ConfigError
from components.token_layout import TokenLayout
from components.weights.families import read_for_family
from components.weights.identify import count_indices
from components.weights.keys import rename_start
from components.weights.layouts import convert_for_family
from components.weights.reader import DEFAULT_KEY, WeightsError
from components.weights.strict import LoadReport, load_strict

# VideoMAE ViT sizes (the settings every size shares are DEFAULTS)
VARIANTS: dict[str, dict] = {
    "videomae_small": dict(embed_dim=384, depth=12, num_heads=6),
    "videomae_base": dict(embed_dim=768, depth=12, num_heads=12),
    "videomae_large": dict(embed_dim=1024, depth=24, num_heads=16),
    "videomae_huge": dict(embed_dim=1280, depth=32, num_heads=16),
}

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
        arch = {**DEFAULTS, **VARIANTS[config.name], **videomae_kwargs(config.kwargs)}
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


def videomae_kwargs(kwargs: dict) -> dict:
    """The architecture settings of ``DEFAULTS`` and of the sizes (embed_dim, depth, num_heads) only."""
    return check_kwargs(kwargs, {**DEFAULTS, **VARIANTS["videomae_base"]}, "videomae")


# ---- weights: published layouts and their key maps, size guess, loader ------------------------------
# VideoMAE's published layouts -> the ``videomae`` family's (timm-block) names.
#
# - Original release (MCG-NJU/VideoMAE): fine-tuned ``checkpoint.pth`` holds ``patch_embed.proj``
#   (a Conv3d), ``blocks.i.{norm1, attn.qkv.weight, attn.q_bias, attn.v_bias, attn.proj, norm2,
#   mlp.fc1, mlp.fc2}``, ``fc_norm`` (or ``norm``) and a ``head``; pre-training files hold the same
#   under ``encoder.`` beside the MAE ``decoder.*``, ``encoder_to_decoder`` and ``mask_token``.
# - Hugging Face transformers: ``videomae.`` (or no prefix) + ``embeddings.patch_embeddings.projection``,
#   ``encoder.layer.i.attention.attention.{query,key,value}`` with ``q_bias``/``v_bias`` (4.x) or
#   ``query.bias``/``value.bias`` (5.x), ``attention.output.dense``, ``layernorm_before/after``,
#   ``intermediate.dense``, ``output.dense``, ``layernorm``, ``fc_norm``, ``classifier``.
# The fused ``qkv.bias`` is (query bias, zeros, value bias): VideoMAE has no key bias.

MAE_DECODER = ("decoder.", "encoder_to_decoder.", "mask_token", "decoder_pos_embed")

_HF_BLOCK = {
    "layernorm_before.": "norm1.", "layernorm_after.": "norm2.", "attention.output.dense.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.", "output.dense.": "mlp.fc2.",
}


def detect_videomae(state: dict[str, torch.Tensor]) -> str | None:
    """videomae_hf, videomae_release or None."""
    keys = set(state)
    if any(re.match(r"(videomae\.)?encoder\.layer\.\d+\.attention\.attention\.query\.weight$", k) for k in keys):
        return "videomae_hf"
    w = state.get("patch_embed.proj.weight", state.get("encoder.patch_embed.proj.weight"))
    if w is not None and w.dim() == 5 and any(re.match(r"(encoder\.)?blocks\.\d+\.", k) for k in keys):
        return "videomae_release"
    return None


def _fuse_bias(q: torch.Tensor | None, k: torch.Tensor | None, v: torch.Tensor | None, dim: int,
               like: torch.Tensor) -> torch.Tensor:
    zeros = torch.zeros(dim, dtype=like.dtype)
    return torch.cat([zeros if b is None else b for b in (q, k, v)])


def videomae_release_to_family(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    notes = ["converted VideoMAE release names (q_bias/v_bias fused into qkv.bias)"]
    if any(k.startswith("encoder.blocks.") for k in state):
        dropped = [k for k in state if not k.startswith("encoder.")]
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        notes.append(f"pre-training file: encoder used, {len(dropped)} MAE decoder tensors dropped")
    out = {k: v for k, v in state.items() if not re.search(r"attn\.[qv]_bias$", k)}
    for key in [k for k in state if k.endswith("attn.qkv.weight")]:
        base = key.removesuffix("qkv.weight")
        if f"{base}q_bias" in state or f"{base}v_bias" in state:
            dim = state[key].shape[1]
            out[f"{base}qkv.bias"] = _fuse_bias(state.get(f"{base}q_bias"), None, state.get(f"{base}v_bias"), dim,
                                                state[key])
    return out, notes


def videomae_hf_to_family(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    notes = ["converted Hugging Face VideoMAE names (query/key/value fused into qkv)"]
    dropped = [k for k in state if k.startswith(MAE_DECODER)]
    if dropped:
        notes.append(f"pre-training file: {len(dropped)} MAE decoder tensors dropped")
    body = {k.removeprefix("videomae."): v for k, v in state.items() if not k.startswith(MAE_DECODER)}
    out: dict[str, torch.Tensor] = {}
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in body.items():
        if m := re.match(r"encoder\.layer\.(\d+)\.attention\.attention\.(.+)$", key):
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif m := re.match(r"encoder\.layer\.(\d+)\.(.+)$", key):
            out[f"blocks.{m.group(1)}.{rename_start(m.group(2), _HF_BLOCK)}"] = value
        elif key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("layernorm."):
            out["norm." + key.removeprefix("layernorm.")] = value
        elif key.startswith("classifier."):
            out["head." + key.removeprefix("classifier.")] = value  # dropped as the classifier head
        else:
            out[key] = value  # fc_norm.*, or anything strict loading will report
    for i, att in layers.items():
        q, k, v = att["query.weight"], att["key.weight"], att["value.weight"]
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, k, v])  # (3 d, d): query, key, value rows
        out[f"blocks.{i}.attn.qkv.bias"] = _fuse_bias(att.get("q_bias", att.get("query.bias")), att.get("key.bias"),
                                                      att.get("v_bias", att.get("value.bias")), q.shape[0], q)
    return out, notes


def guess_videomae(state: dict[str, torch.Tensor]) -> str | None:
    w = state.get("patch_embed.proj.weight")
    if w is None or w.dim() != 5:
        return None
    depth = count_indices(state, r"blocks\.(\d+)\.")
    return next((n for n, a in VARIANTS.items() if (a["embed_dim"], a["depth"]) == (w.shape[0], depth)), None)


def convert_videomae(layout: str, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    return videomae_hf_to_family(state) if layout == "videomae_hf" else videomae_release_to_family(state)


def load_videomae(model: nn.Module, path, name: str, *, key_hint: str = DEFAULT_KEY, quiet: bool = False) -> LoadReport:
    """VideoMAE release (fine-tuned or pre-training encoder) and Hugging Face files; the position
    table is fixed (sinusoidal), so nothing needs resizing for another clip size."""
    wf, where, notes = read_for_family(path, key_hint, "videomae")
    state, more = convert_for_family("videomae", wf.tensors)
    own = model.state_dict()
    if "norm.weight" in state and "fc_norm.weight" not in state and "fc_norm.weight" in own:
        raise WeightsError(f"{where}: a pre-training encoder (final norm, no fc_norm): set "
                           "model.backbone.kwargs.use_mean_pooling: false")
    if "fc_norm.weight" in state and "norm.weight" in own:
        raise WeightsError(f"{where}: a fine-tuned file (fc_norm after mean pooling): set "
                           "model.backbone.kwargs.use_mean_pooling: true (the default)")
    return load_strict(model, state, where=where, family="videomae", name=name, notes=notes + more, quiet=quiet)


HF_LAYOUT = PublishedLayout("videomae_hf", "Hugging Face transformers VideoMAE (encoder.layer.N.attention)",
                            lambda state: detect_videomae(state) == "videomae_hf", order=10)
RELEASE_LAYOUT = PublishedLayout("videomae_release", "VideoMAE release (blocks.N.attn.q_bias, Conv3d patch_embed)",
                                 lambda state: detect_videomae(state) == "videomae_release", order=10)

FAMILY = register_family(BackboneFamily(
    name="videomae", build=VideoMAE, check_kwargs=videomae_kwargs, sizes=lambda: list(VARIANTS),
    layouts=(HF_LAYOUT, RELEASE_LAYOUT), convert=convert_videomae, guess_size=guess_videomae,
))
