"""open_clip's weights files for the ``openclip_vit`` family: published layouts, key maps, size guess
and loader (the family's record is in ``openclip_vit.py``).

Layouts (after ``reader`` unwrapped ``state_dict`` / ``module.``):
- ``open_clip``: ``visual.conv1.weight``, ``visual.transformer.resblocks.{i}`` (open_clip state dicts
  and OpenAI CLIP, whose TorchScript archives use the same names plus a few non-weight attributes);
- ``timm_clip``: a CLIP image tower in timm's layout (``vit_base_patch16_clip_224.openai``):
  ``patch_embed.proj.weight``, ``blocks.{i}``, ``norm_pre`` and its projection as ``head``
  (the ``timm_vit`` family reads it as is).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from components.backbone_family import PublishedLayout
from components.weights.families import read_for_family
from components.weights.identify import count_indices
from components.weights.keys import rename_start
from components.weights.layouts import convert_for_family
from components.weights.openai_clip import OPENAI_ATTRS, quick_gelu_note
from components.weights.reader import DEFAULT_KEY
from components.weights.strict import LoadReport, load_strict

# open_clip architecture JSONs of the tiny test models (e.g. "vidpeft-tiny-clip"), beside the family
OPENCLIP_CONFIG_DIR = Path(__file__).resolve().parent / "openclip_configs"
_openclip_added = False


def add_openclip_test_archs() -> None:
    """Make open_clip know the tiny test architectures (once per process)."""
    global _openclip_added
    if not _openclip_added:
        import open_clip

        open_clip.add_model_config(OPENCLIP_CONFIG_DIR)
        _openclip_added = True


_TIMM_BLOCK = {
    "norm1.": "ln_1.", "norm2.": "ln_2.", "attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj.": "attn.out_proj.", "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj.", "ls1.": "ls_1.", "ls2.": "ls_2.",
}


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
    drop = [k for k in state if k in OPENAI_ATTRS or k.split(".")[-1] == "attn_mask"]
    out = {k: v for k, v in state.items() if k not in drop}
    return out, ([f"dropped non-weight attributes: {', '.join(drop[:4])}" + (" ..." if len(drop) > 4 else "")]
                 if drop else [])


def convert_open_clip(layout: str, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    notes: list[str] = []
    if layout == "timm_clip":
        state, notes = timm_clip_to_open_clip(state)
    state, more = openai_extras_dropped(state)
    return state, notes + more


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
    layers = count_indices(state, r"visual\.transformer\.resblocks\.(\d+)\.")
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


def load_open_clip(model: nn.Module, path: str | Path, name: str, *, text: bool = True,
                   key_hint: str = DEFAULT_KEY, quiet: bool = False) -> LoadReport:
    """open_clip state dicts, OpenAI CLIP TorchScript archives and timm-layout CLIP towers, with
    open_clip's own adaptations (as its ``load_checkpoint``): scalar/1-d ``logit_scale``, a zero
    ``logit_bias`` where the model has one, image and text position embeddings resized.
    ``text=False``: only the image tower is loaded (and must be complete); the text tower's tensors
    in the file are ignored, and said."""
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    wf, where, notes = read_for_family(path, key_hint, "openclip_vit")
    state, more = convert_for_family("openclip_vit", wf.tensors)
    notes += quick_gelu_note(wf, model, "openclip_vit", name) + more
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    scale = getattr(model, "logit_scale", None)
    if "logit_scale" in state and scale is not None and state["logit_scale"].ndim != scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(scale.shape)
    if getattr(model, "logit_bias", None) is not None and "logit_bias" not in state and "logit_scale" in state:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    pos = state.get("visual.positional_embedding")
    resize_pos_embed(state, model)
    text_pos = state.get("positional_embedding")
    if text_pos is None or getattr(model, "positional_embedding", None) is None or \
            text_pos.shape[-1] == model.positional_embedding.shape[-1]:
        resize_text_pos_embed(state, model)  # another width: a different size, which strict loading reports
    new = state.get("visual.positional_embedding")
    if pos is not None and new is not None and new.shape != pos.shape:
        notes.append(f"resized visual.positional_embedding from {pos.shape[0]} to {new.shape[0]} tokens")
    if text:
        return load_strict(model, state, where=where, family="openclip_vit", name=name, notes=notes, quiet=quiet)
    other = [k for k in state if not k.startswith("visual.")]
    if other:
        notes.append(f"image tower only: {len(other)} text-tower tensors in the file are not used")
    visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        visual = state  # let strict loading say what the file holds instead
    return load_strict(model.visual, visual, where=where, family="openclip_vit", name=name, notes=notes,
                       quiet=quiet, guess_from=state)


OPEN_CLIP_LAYOUT = PublishedLayout(
    "open_clip", "open_clip / OpenAI CLIP (visual.transformer.resblocks.N)",
    lambda state: "visual.conv1.weight" in state or "visual.class_embedding" in state, order=30)
TIMM_CLIP_LAYOUT = PublishedLayout(
    "timm_clip", "timm-layout CLIP image tower (norm_pre, blocks.N, head = projection)",
    lambda state: "patch_embed.proj.weight" in state and "norm_pre.weight" in state
    and any(k.startswith("blocks.") for k in state), order=80)
