"""Which size of a family a file's tensors fit ("these weights look like swin3d_s").

Each guess reads the architecture off the (family-layout) tensor shapes: widths from the patch
embedding, depth from the block indices, patch size from the embedding kernel, and matches it with
the family's named sizes. Nothing is built, so this is cheap enough to run on every failed load.
"""

from __future__ import annotations

import re

import torch

from components.weights.sizes import VIDEO_SWIN_SIZES, VIDEOMAE_SIZES, add_openclip_test_archs


def _count(keys, pattern: str) -> int:
    found = {m.group(1) for k in keys if (m := re.match(pattern, k))}
    return len(found)


def guess_video_swin(state: dict[str, torch.Tensor]) -> str | None:
    w = state.get("patch_embed.proj.weight")
    if w is None:
        return None
    stages = _count(state, r"features\.(\d+)\.\d+\.")
    depths = [_count(state, rf"features\.{2 * s}\.(\d+)\.") for s in range(stages)]
    heads = [state[f"features.{2 * s}.0.attn.relative_position_bias_table"].shape[1]
             for s in range(stages) if f"features.{2 * s}.0.attn.relative_position_bias_table" in state]
    for name, arch in VIDEO_SWIN_SIZES.items():
        if arch["embed_dim"] == w.shape[0] and list(arch["depths"]) == depths and list(arch["num_heads"]) == heads:
            return name
    return None


# timm ViT sizes: (width, depth) -> size word in timm's model names
VIT_SIZES = {(192, 12): "tiny", (384, 12): "small", (768, 12): "base", (1024, 24): "large", (1280, 32): "huge"}


def guess_timm_vit(state: dict[str, torch.Tensor]) -> str | None:
    import timm

    w = state.get("patch_embed.proj.weight")
    if w is None:
        return None
    size = VIT_SIZES.get((w.shape[0], _count(state, r"blocks\.(\d+)\.")))
    if size is None:
        return None
    clip = "_clip" if "norm_pre.weight" in state else ""
    names = timm.list_models(f"vit_{size}_patch{w.shape[-1]}{clip}_*")
    plain = [n for n in names if re.fullmatch(rf"vit_{size}_patch{w.shape[-1]}{clip}_\d+", n)]
    return (plain or names or [None])[0]


def guess_open_clip(state: dict[str, torch.Tensor]) -> str | None:
    import open_clip
    from open_clip.factory import _MODEL_CONFIGS

    add_openclip_test_archs()

    w = state.get("visual.conv1.weight")
    if w is None:
        return None
    layers = _count(state, r"visual\.transformer\.resblocks\.(\d+)\.")
    text_width = state["ln_final.weight"].shape[0] if "ln_final.weight" in state else None
    embed = state["visual.proj"].shape[1] if "visual.proj" in state else None
    for name in open_clip.list_models():
        cfg = _MODEL_CONFIGS.get(name, {})
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if v.get("timm_model_name") or not isinstance(v.get("patch_size"), int):
            continue
        if (v.get("width"), v.get("layers"), v.get("patch_size")) != (w.shape[0], layers, w.shape[-1]):
            continue
        if embed is not None and cfg.get("embed_dim") != embed:
            continue
        if text_width is not None and t.get("width") != text_width:
            continue
        return name
    return None


def guess_videomae(state: dict[str, torch.Tensor]) -> str | None:
    w = state.get("patch_embed.proj.weight")
    if w is None or w.dim() != 5:
        return None
    depth = _count(state, r"blocks\.(\d+)\.")
    return next((n for n, a in VIDEOMAE_SIZES.items() if (a["embed_dim"], a["depth"]) == (w.shape[0], depth)), None)


GUESSERS = {"videomae": guess_videomae, "video_swin": guess_video_swin, "timm_vit": guess_timm_vit, "openclip_vit": guess_open_clip}


def guess_size(family: str, state: dict[str, torch.Tensor]) -> str | None:
    fn = GUESSERS.get(family)
    try:
        return fn(state) if fn else None
    except Exception:  # a guess is a hint; a file too odd to guess gets none
        return None


def looks_like(state: dict[str, torch.Tensor]) -> list[tuple[str, str | None]]:
    """(family, size or None) pairs the file's tensors would load into, most natural first."""
    from components.weights.layouts import LAYOUT_FAMILY, convert_for_family, detect_layout

    layout = detect_layout(state)
    if layout == "timm_clip":  # a CLIP tower in timm's layout serves both families
        converted, _ = convert_for_family("openclip_vit", state)
        return [("openclip_vit", guess_size("openclip_vit", converted)), ("timm_vit", guess_size("timm_vit", state))]
    family = LAYOUT_FAMILY.get(layout)
    if family is None:
        return []
    converted, _ = convert_for_family(family, state)
    return [(family, guess_size(family, converted))]
