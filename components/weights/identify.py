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


def video_swin_arch(state: dict[str, torch.Tensor]) -> dict | None:
    """The ``SwinTransformer3d`` settings read off a torchvision-layout file (for sizes without a name,
    e.g. the release's Swin-L): width, patch, depths, heads and the window of the stored index."""
    from components.weights.swin_tables import window_of_index

    w = state.get("patch_embed.proj.weight")
    table = state.get("features.0.0.attn.relative_position_bias_table")
    if w is None or w.dim() != 5 or table is None:
        return None
    stages = _count(state, r"features\.(\d+)\.\d+\.")
    arch = {"embed_dim": w.shape[0], "patch_size": list(w.shape[2:]),
            "depths": [_count(state, rf"features\.{2 * s}\.(\d+)\.") for s in range(stages)],
            "num_heads": [state[f"features.{2 * s}.0.attn.relative_position_bias_table"].shape[1]
                          for s in range(stages)]}
    index = state.get("features.0.0.attn.relative_position_index")
    window = window_of_index(index, table.shape[0]) if index is not None else None
    if window:
        arch["window_size"] = list(window)
    return arch


def suggest_kwargs(family: str, state: dict[str, torch.Tensor]) -> tuple[str, dict] | None:
    """A named size and the ``model.backbone.kwargs`` over it that build what the (family-layout)
    tensors hold, where the shapes tell (the kwargs set every setting the size would)."""
    try:
        arch = video_swin_arch(state) if family == "video_swin" else None
    except Exception:  # a hint; a file too odd to read gets none
        return None
    return (next(iter(VIDEO_SWIN_SIZES)), arch) if arch else None


def flow(kwargs: dict) -> str:
    """``kwargs`` as YAML flow style: {embed_dim: 192, depths: [2, 2, 18, 2]}."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in kwargs.items()) + "}"


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


# open_clip configs whose towers are not the plain CLIP this family builds (CoCa, attention pools, CLIPA)
_NOT_PLAIN = ("multimodal_cfg", "custom_text")
_NOT_PLAIN_VISION = ("attentional_pool", "no_ln_pre", "final_ln_after_pool", "timm_model_name")


def _plain_clip(cfg: dict) -> bool:
    v = cfg.get("vision_cfg", {})
    return (not any(k in cfg for k in _NOT_PLAIN) and not any(v.get(k) for k in _NOT_PLAIN_VISION)
            and v.get("pool_type", "tok") == "tok" and isinstance(v.get("patch_size"), int))


def guess_open_clip(state: dict[str, torch.Tensor]) -> str | None:
    """The plain CLIP architecture the tensors fit (widths, depth, patch, text context and vocabulary;
    not the grid, which loading resamples); of several, the shortest name (``ViT-L-14`` before
    ``ViT-L-14-336`` and ``ViT-L-14-quickgelu``)."""
    import open_clip
    from open_clip.factory import _MODEL_CONFIGS

    add_openclip_test_archs()

    w = state.get("visual.conv1.weight")
    if w is None:
        return None
    layers = _count(state, r"visual\.transformer\.resblocks\.(\d+)\.")
    text_width = state["ln_final.weight"].shape[0] if "ln_final.weight" in state else None
    embed = state["visual.proj"].shape[1] if "visual.proj" in state else None
    context = state["positional_embedding"].shape[0] if "positional_embedding" in state else None
    vocab = state["token_embedding.weight"].shape[0] if "token_embedding.weight" in state else None
    fits = []
    for name in open_clip.list_models():
        cfg = _MODEL_CONFIGS.get(name, {})
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if not _plain_clip(cfg):
            continue
        if (v.get("width"), v.get("layers"), v.get("patch_size")) != (w.shape[0], layers, w.shape[-1]):
            continue
        if embed is not None and cfg.get("embed_dim") != embed:
            continue
        if text_width is not None and t.get("width") != text_width:
            continue
        if context is not None and t.get("context_length", 77) != context:
            continue
        if vocab is not None and t.get("vocab_size", 49408) != vocab:
            continue
        fits.append(name)
    return min(fits, key=lambda n: (len(n), n)) if fits else None


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
