"""torchvision Video Swin (``swin3d_t/s/b``) as a frozen backbone, family "video_swin".

Layout inside blocks: channels-last grids (B, T', H', W', C) with T' = T / patch_t, H' = H / 4 / 2^s
at stage s; attention runs over 3-D windows (``window_size``, clipped to the input, shifted by half in
every second block). Blocks are nested in stages: ``features[2s][j]`` (the odd entries of
``features`` are PatchMerging layers); widths and head counts differ by stage.

Tiny random models: ``kwargs`` override the variant's constructor arguments of
``torchvision.models.video.SwinTransformer3d`` (embed_dim, depths, num_heads, window_size, patch_size,
mlp_ratio, stochastic_depth_prob, ...), e.g. ``{embed_dim: 16, depths: [1, 1], num_heads: [1, 2],
window_size: [2, 4, 4]}``. Pretrained weights: a local file holding torchvision's state dict
(``swin3d_b-*.pth``) or a Video Swin Transformer release / MMAction2 checkpoint (renamed on load,
see ``components.weights``); the K400 classifier head is dropped, anything else must fit exactly.
"""

from __future__ import annotations

import re
from functools import cache

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torchvision.models.video.swin_transformer import (
    ShiftedWindowAttention3d,
    SwinTransformer3d,
    _compute_attention_mask_3d,
    _compute_pad_size_3d,
    _get_window_and_shift_size,
)

from components.token_layout import TokenLayout
from components.backbones.attention import (
    AttentionInternals,
    HeadsView,
    split_kv_weights,
    register_attention_internals,
)
from components.backbone_family import BackboneFamily, PublishedLayout, register_family
from components.backbones.arch_kwargs import allowed_from_signature, check_kwargs
from components.backbones.config import BackboneConfig
from components.backbones.pooling import FrameTokens, PooledBackbone
from components.backbones.spec import BackboneSpec
from components.weights.families import read_for_family
from components.weights.identify import count_indices
from components.weights.keys import rename_start
from components.weights.layouts import convert_for_family
from components.weights.reader import DEFAULT_KEY
from components.weights.strict import LoadReport, load_strict
from components.weights.swin_tables import resize_swin_tables, window_of_index

# torchvision's swin3d_t/s/b constructor arguments (torchvision.models.video.swin3d_*): the named sizes
VARIANTS: dict[str, dict] = {
    "swin3d_t": dict(patch_size=[2, 4, 4], embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                     window_size=[8, 7, 7], stochastic_depth_prob=0.1),
    "swin3d_s": dict(patch_size=[2, 4, 4], embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24],
                     window_size=[8, 7, 7], stochastic_depth_prob=0.1),
    "swin3d_b": dict(patch_size=[2, 4, 4], embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                     window_size=[8, 7, 7], stochastic_depth_prob=0.1),
}
KINETICS_MEAN = (0.485, 0.456, 0.406)
KINETICS_STD = (0.229, 0.224, 0.225)


def describe_video_swin(swin: SwinTransformer3d, arch: dict, prefix: str, img_size: int = 0) -> BackboneSpec:
    """Blocks ``features[2s][j]``; sites attn (window attention, qkv/proj), mlp, block. With
    ``img_size``, each layout carries its stage's (H', W') token grid (what MHVA sizes its groups by)."""
    blocks, dims, heads, layouts = [], [], [], []
    window = tuple(arch["window_size"])
    for s, depth in enumerate(arch["depths"]):
        side = img_size // arch["patch_size"][1] // 2**s if img_size else 0  # H' = W' at stage s
        for j in range(depth):
            blocks.append(f"{prefix}features.{2 * s}.{j}")
            dims.append(arch["embed_dim"] * 2**s)
            heads.append(arch["num_heads"][s])
            layouts.append(TokenLayout(kind="swin", window=window, grid=(side, side)))
    return BackboneSpec(
        family="video_swin",
        feature_dim=swin.num_features,
        mean=KINETICS_MEAN,
        std=KINETICS_STD,
        blocks=blocks,
        sites={"block": "", "attn": "attn", "mlp": "mlp"},
        block_dims=dims,
        block_heads=heads,
        layouts=layouts,
        total_params=sum(p.numel() for p in swin.parameters()),
        checkpoint_root=prefix,
        residual_branches=["stochastic_depth"],  # torchvision's StochasticDepth, on both branches
        stem=[f"{prefix}patch_embed"],
    )


class VideoSwin(PooledBackbone):
    """(B, T, C, H, W) -> Video Swin features -> final norm -> (B, T', H'*W', D) tokens -> the shared
    pooling: ``mean`` (and ``cls``: Swin has no class token) over (H', W') then T', or ``grid`` cells."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        if config.name not in VARIANTS:
            raise ValueError(f"model.backbone.name: video_swin knows {sorted(VARIANTS)}, not {config.name!r}")
        arch = {**VARIANTS[config.name], **video_swin_kwargs(config.kwargs)}
        self.swin = SwinTransformer3d(**arch)
        self.swin.head = nn.Identity()  # the K400 classifier is replaced by the task head
        if config.checkpoint:
            load_video_swin(self.swin, config.checkpoint, config.name)
        self.spec = describe_video_swin(self.swin, arch, prefix="swin.", img_size=config.img_size)
        grid = self.spec.layouts[-1].grid if config.img_size else None  # the last stage's (H', W')
        self.init_pooling(config, FrameTokens("video_swin", self.swin.num_features, grid=grid, models_time=True))

    def tokens(self, video: torch.Tensor) -> torch.Tensor:
        x = rearrange(video, "b t c h w -> b c t h w")
        x = self.swin.patch_embed(x)  # b t' h' w' c
        x = self.swin.pos_drop(x)
        x = self.swin.features(x)  # b t' h' w' c (last stage)
        return rearrange(self.swin.norm(x), "b t h w c -> b t (h w) c")


@cache
def video_swin_allowed() -> dict:
    return allowed_from_signature(SwinTransformer3d.__init__)


def video_swin_kwargs(kwargs: dict) -> dict:
    return check_kwargs(kwargs, video_swin_allowed(), "video_swin")


# ---- weights: published layouts, key map, size guess, loader ---------------------------------------

_SWIN_MLP = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}


def swin_release_to_torchvision(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Stage s's blocks ``layers.s.blocks.j`` -> ``features.2s.j``; its PatchMerging
    ``layers.s.downsample`` -> ``features.2s+1``; MLP ``fc1/fc2`` -> ``mlp.0/mlp.3`` (torchvision's
    Sequential); MMAction2's output norm ``norm{last}`` -> ``norm``. Values are unchanged: both
    implementations share qkv packing, relative-position tables/indices and merge order."""
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    stage_norms = sorted(k for k in state if re.match(r"norm\d+\.", k))
    last_norm = stage_norms[-1].split(".")[0] if stage_norms else None
    for key, value in state.items():
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)$", key)
        if m:
            out[f"features.{2 * int(m.group(1))}.{m.group(2)}.{rename_start(m.group(3), _SWIN_MLP)}"] = value
            continue
        m = re.match(r"layers\.(\d+)\.downsample\.(.+)$", key)
        if m:
            out[f"features.{2 * int(m.group(1)) + 1}.{m.group(2)}"] = value
            continue
        m = re.match(r"(norm\d+)\.(.+)$", key)
        if m:
            if m.group(1) == last_norm:
                out[f"norm.{m.group(2)}"] = value
            else:
                notes.append(f"dropped {key} (an intermediate-stage output norm torchvision does not have)")
            continue
        out[key] = value
    notes.insert(0, "converted Video Swin release / MMAction2 names to torchvision swin3d")
    return out, notes


def video_swin_arch(state: dict[str, torch.Tensor]) -> dict | None:
    """The ``SwinTransformer3d`` settings read off a torchvision-layout file: width, patch, depths,
    heads and (from the stored relative-position index) the window."""
    w = state.get("patch_embed.proj.weight")
    table = state.get("features.0.0.attn.relative_position_bias_table")
    if w is None or w.dim() != 5 or table is None:
        return None
    stages = count_indices(state, r"features\.(\d+)\.\d+\.")
    arch = {"embed_dim": w.shape[0], "patch_size": list(w.shape[2:]),
            "depths": [count_indices(state, rf"features\.{2 * s}\.(\d+)\.") for s in range(stages)],
            "num_heads": [state[f"features.{2 * s}.0.attn.relative_position_bias_table"].shape[1]
                          for s in range(stages)]}
    index = state.get("features.0.0.attn.relative_position_index")
    window = window_of_index(index, table.shape[0]) if index is not None else None
    if window:
        arch["window_size"] = list(window)
    return arch


def guess_video_swin(state: dict[str, torch.Tensor]) -> str | None:
    arch = video_swin_arch(state)
    keys = ("embed_dim", "depths", "num_heads")
    return next((n for n, a in VARIANTS.items() if arch and all(list_of(a[k]) == list_of(arch[k]) for k in keys)), None)


def list_of(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def suggest_video_swin(state: dict[str, torch.Tensor]) -> tuple[str, dict] | None:
    """For sizes torchvision does not name (the release's Swin-L): kwargs over the first named size."""
    arch = video_swin_arch(state)
    return (next(iter(VARIANTS)), arch) if arch else None


def convert_video_swin(layout: str, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    return swin_release_to_torchvision(state) if layout == "video_swin_release" else (state, [])


def load_video_swin(swin: nn.Module, path, name: str, *, key_hint: str = DEFAULT_KEY, quiet: bool = False) -> LoadReport:
    """torchvision ``swin3d_*`` files as they are; Video Swin release / MMAction2 files renamed; bias
    tables resized to the model's window (``components.weights.swin_tables``)."""
    wf, where, notes = read_for_family(path, key_hint, "video_swin")
    state, more = convert_for_family("video_swin", wf.tensors)
    notes += more + resize_swin_tables(state, swin, where)
    return load_strict(swin, state, where=where, family="video_swin", name=name, notes=notes, quiet=quiet)


def _has(pattern: str):
    return lambda state: any(re.match(pattern, k) for k in state)


TORCHVISION = PublishedLayout("torchvision_swin3d", "torchvision swin3d state dict",
                              _has(r"features\.\d+\.\d+\.attn\.relative_position_bias_table$"), order=20)
RELEASE = PublishedLayout("video_swin_release", "Video Swin Transformer release / MMAction2 Swin (layers.N.blocks.M)",
                          _has(r"layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table$"), order=20)

FAMILY = register_family(BackboneFamily(
    name="video_swin", build=VideoSwin, check_kwargs=video_swin_kwargs, sizes=lambda: list(VARIANTS),
    layouts=(TORCHVISION, RELEASE), convert=convert_video_swin, guess_size=guess_video_swin,
    suggest_kwargs=suggest_video_swin,
))


@register_attention_internals(ShiftedWindowAttention3d)
class SwinWindowAttentionInternals(AttentionInternals):
    """torchvision ``ShiftedWindowAttention3d``: the same pad / cyclic shift / window partition as
    ``shifted_window_attention_3d``; logits get the relative position bias and, in shifted blocks, the
    shift mask. Prefix keys are shared by every window and get no position bias."""

    def __init__(self, module: ShiftedWindowAttention3d) -> None:
        super().__init__(module)
        self.num_heads = module.num_heads
        self.head_dim = module.qkv.in_features // module.num_heads

    def heads(self, x: torch.Tensor) -> HeadsView:
        m = self.module
        b, t, h, w, c = x.shape
        window, shift = _get_window_and_shift_size(list(m.shift_size), [t, h, w], list(m.window_size))
        pad = _compute_pad_size_3d((t, h, w), tuple(window))
        x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        padded = tuple(x.shape[1:4])
        shifted = sum(shift) > 0
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        wt, wh, ww = window
        # partition: b (nt wt) (nh wh) (nw ww) c -> (b nt nh nw) (wt wh ww) c, torchvision's window order
        windows = rearrange(x, "b (nt wt) (nh wh) (nw ww) c -> (b nt nh nw) (wt wh ww) c", wt=wt, wh=wh, ww=ww)
        qkv = F.linear(windows, m.qkv.weight, m.qkv.bias)
        q, k, v = rearrange(qkv, "n l (three h d) -> three n h l d", three=3, h=self.num_heads)
        bias = m.get_relative_position_bias(window)  # 1 h l l
        if shifted:
            mask = _compute_attention_mask_3d(x, padded, tuple(window), tuple(shift))  # nW l l
            bias = bias + repeat(mask, "nw l m -> (b nw) 1 l m", b=b)
        nt, nh, nw = padded[0] // wt, padded[1] // wh, padded[2] // ww

        def restore(y: torch.Tensor) -> torch.Tensor:
            # (b nt nh nw) h (wt wh ww) d -> b (nt wt) (nh wh) (nw ww) (h d), then unshift and unpad
            y = rearrange(y, "(b nt nh nw) h (wt wh ww) d -> b (nt wt) (nh wh) (nw ww) (h d)",
                          nt=nt, nh=nh, nw=nw, wt=wt, wh=wh, ww=ww)
            if shifted:
                y = torch.roll(y, shifts=tuple(shift), dims=(1, 2, 3))
            return y[:, :t, :h, :w]

        return HeadsView(q, k, v, bias, restore)

    def prefix_kv(self, c):
        m = self.module
        wk, bk, wv, bv = split_kv_weights(m.qkv.weight, m.qkv.bias, m.qkv.in_features)
        pk = rearrange(F.linear(c, wk, bk), "l (h d) -> h l d", h=self.num_heads)
        pv = rearrange(F.linear(c, wv, bv), "l (h d) -> h l d", h=self.num_heads)
        return pk, pv

    def project(self, y, bias=False):
        return F.linear(y, self.module.proj.weight, self.module.proj.bias if bias else None)

    def plain_call(self, x, args, kwargs):
        m = self.module
        return not args and not kwargs and not (m.training and (m.attention_dropout > 0 or m.dropout > 0))
