"""Published key layouts, recognised from the key names, and their conversion to what a family builds.

Layouts (after ``reader`` unwrapped ``state_dict`` / ``module.`` / ``backbone.``):
- ``torchvision_swin3d``: ``features.{2s}.{j}.attn.qkv.weight`` ... (torchvision ``swin3d_*``);
- ``video_swin_release``: ``layers.{s}.blocks.{j}.attn.qkv.weight``, ``layers.{s}.downsample.*``,
  ``mlp.fc1/fc2``, final ``norm`` (Video-Swin-Transformer release) or ``norm3`` (MMAction2 1.x);
- ``open_clip``: ``visual.conv1.weight``, ``visual.transformer.resblocks.{i}`` (open_clip state dicts
  and OpenAI CLIP, whose TorchScript archives use the same names plus a few non-weight attributes);
- ``timm_vit``: ``patch_embed.proj.weight``, ``blocks.{i}.attn.qkv.weight``; a CLIP image tower in
  timm's layout (``vit_base_patch16_clip_224.openai``) has ``norm_pre`` and its projection as ``head``;
- ``vivit``: this project's ViViT (``spatial.*``, ``temporal.*``).
"""

from __future__ import annotations

import re

import torch

from components.weights.keys import rename_start

LAYOUT_NAMES = {
    "torchvision_swin3d": "torchvision swin3d state dict",
    "video_swin_release": "Video Swin Transformer release / MMAction2 Swin (layers.N.blocks.M)",
    "open_clip": "open_clip / OpenAI CLIP (visual.transformer.resblocks.N)",
    "timm_clip": "timm-layout CLIP image tower (norm_pre, blocks.N, head = projection)",
    "timm_vit": "timm ViT (blocks.N.attn.qkv)",
    "vivit": "vidpeft ViViT (spatial.*, temporal.*)",
    "videomae_release": "VideoMAE release (blocks.N.attn.q_bias, Conv3d patch_embed)",
    "videomae_hf": "Hugging Face transformers VideoMAE (encoder.layer.N.attention)",
    "mvit": "MViT (torchvision mvit_*, MMAction2 / SlowFast MViT: pooled attention blocks.N.attn.pool_q); "
            "not supported: no vidpeft backbone family builds MViT",
    "unknown": "unrecognised layout",
}

LAYOUT_FAMILY = {
    "torchvision_swin3d": "video_swin", "video_swin_release": "video_swin", "open_clip": "openclip_vit",
    "timm_clip": "timm_vit", "timm_vit": "timm_vit", "vivit": "vivit",
    "videomae_release": "videomae", "videomae_hf": "videomae",
}

# the layouts each family's loader converts (a timm ViT file also feeds vivit's spatial transformer)
FAMILY_LAYOUTS = {
    "video_swin": ("torchvision_swin3d", "video_swin_release"), "timm_vit": ("timm_vit", "timm_clip", "open_clip"),
    "vivit": ("vivit", "timm_vit", "timm_clip"), "openclip_vit": ("open_clip", "timm_clip"),
    "videomae": ("videomae_release", "videomae_hf"),
}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    from components.weights.videomae_layouts import detect_videomae

    if any(re.search(r"blocks\.\d+\.attn\.(pool_[qkv]\.|rel_pos_[thw]$)", k) for k in state):
        return "mvit"  # before VideoMAE: SlowFast's MViT also has a Conv3d patch_embed.proj and blocks.N
    videomae = detect_videomae(state)
    if videomae:
        return videomae
    keys = set(state)
    if any(re.match(r"features\.\d+\.\d+\.attn\.relative_position_bias_table$", k) for k in keys):
        return "torchvision_swin3d"
    if any(re.match(r"layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table$", k) for k in keys):
        return "video_swin_release"
    if "visual.conv1.weight" in keys or "visual.class_embedding" in keys:
        return "open_clip"
    if any(k.startswith("spatial.blocks.") for k in keys):
        return "vivit"
    if "patch_embed.proj.weight" in keys and any(k.startswith("blocks.") for k in keys):
        return "timm_clip" if "norm_pre.weight" in keys else "timm_vit"
    return "unknown"


def check_family_layout(family: str, state: dict[str, torch.Tensor], where: str) -> str:
    """The file's layout, or one error when it is a layout of another family (or of none)."""
    from components.weights.errors import WeightsError

    layout = detect_layout(state)
    if layout == "mvit":
        raise WeightsError(f"{where}: {LAYOUT_NAMES[layout]}")
    if layout in LAYOUT_FAMILY and layout not in FAMILY_LAYOUTS.get(family, (layout,)):
        from components.weights.identify import looks_like

        other, size = looks_like(state)[0]
        name = f" and model.backbone.name: {size}" if size else ""
        raise WeightsError(f"{where}: a {LAYOUT_NAMES[layout]} file, which the {family} family does not load: "
                           f"set model.backbone.family: {other}{name}")
    return layout


# ---- Video Swin: release / MMAction2 naming -> torchvision swin3d --------------------------------

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


# ---- CLIP: timm layout / OpenAI extras -> open_clip -------------------------------------------------

_TIMM_BLOCK = {
    "norm1.": "ln_1.", "norm2.": "ln_2.", "attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj.": "attn.out_proj.", "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj.", "ls1.": "ls_1.", "ls2.": "ls_2.",
}
OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def timm_clip_to_open_clip(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """timm's CLIP image tower -> open_clip ``visual.*`` (the inverse of timm's OpenAI-CLIP filter):
    class/position embeddings lose timm's leading singleton dims, the projection ``head.weight``
    (out, width) becomes ``visual.proj`` (width, out)."""
    out: dict[str, torch.Tensor] = {}
    notes = ["converted timm-layout CLIP image tower to open_clip's visual tower"]
    for key, value in state.items():
        if key == "cls_token":
            out["visual.class_embedding"] = value.reshape(-1)  # (1, 1, d) -> (d,)
        elif key == "pos_embed":
            out["visual.positional_embedding"] = value.reshape(value.shape[-2], value.shape[-1])  # (1, n, d) -> (n, d)
        elif key == "patch_embed.proj.weight":
            out["visual.conv1.weight"] = value
        elif key.startswith("norm_pre."):
            out["visual.ln_pre." + key.removeprefix("norm_pre.")] = value
        elif key.startswith("norm."):
            out["visual.ln_post." + key.removeprefix("norm.")] = value
        elif key == "head.weight":
            out["visual.proj"] = value.t().contiguous()  # (out, d) -> (d, out)
        elif key == "head.bias":
            if value.abs().max() > 0:
                notes.append("dropped a non-zero head.bias: open_clip's projection has no bias")
        elif m := re.match(r"blocks\.(\d+)\.(.+)$", key):
            out[f"visual.transformer.resblocks.{m.group(1)}.{rename_start(m.group(2), _TIMM_BLOCK)}"] = value
        else:
            out[key] = value  # left as is; strict loading reports it
    return out, notes


def openai_extras_dropped(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """OpenAI CLIP archives also hold ``input_resolution`` / ``context_length`` / ``vocab_size``
    and attention-mask attributes; open_clip rebuilds those itself (as its OpenAI loader does)."""
    drop = [k for k in state if k in OPENAI_EXTRAS or k.split(".")[-1] == "attn_mask"]
    out = {k: v for k, v in state.items() if k not in drop}
    return out, ([f"dropped non-weight attributes: {', '.join(drop[:4])}" + (" ..." if len(drop) > 4 else "")]
                 if drop else [])


def convert_for_family(family: str, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The file's tensors renamed into the family's own layout, and what was done."""
    layout = detect_layout(state)
    if family == "videomae":
        from components.weights.videomae_layouts import videomae_hf_to_family, videomae_release_to_family

        if layout == "videomae_hf":
            return videomae_hf_to_family(state)
        if layout == "videomae_release":
            return videomae_release_to_family(state)
    if family == "video_swin" and layout == "video_swin_release":
        return swin_release_to_torchvision(state)
    if family == "openclip_vit":
        notes: list[str] = []
        if layout == "timm_clip":
            state, notes = timm_clip_to_open_clip(state)
        state, more = openai_extras_dropped(state)
        return state, notes + more
    return state, []
