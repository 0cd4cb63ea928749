"""Per family: read a published file, convert it to the family's layout, resize, load strictly.

Each loader returns a ``LoadReport`` and prints one line per thing done to the file's tensors
(unwrapped, renamed, head dropped, resized); anything that does not fit raises ``WeightsError``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from components.weights.layouts import check_family_layout, convert_for_family
from components.weights.openai_clip import quick_gelu_note
from components.weights.reader import DEFAULT_KEY, WeightsError, WeightsFile, read_weights_file
from components.weights.strict import LoadReport, load_strict, resize_1d_pos
from components.weights.swin_tables import resize_swin_tables


def _read(path: str | Path, key_hint: str, family: str) -> tuple[WeightsFile, str, list[str]]:
    """The file, where it is named in errors, and the notes on what the reader did; a file of
    another family's layout is one error naming the family it fits."""
    wf = read_weights_file(path, key_hint=key_hint)
    check_family_layout(family, wf.tensors, f"{key_hint}: {path}")
    notes = []
    if wf.format == "torchscript":
        notes.append("TorchScript archive: tensors read, its code not run")
    if wf.wrapper:
        notes.append(f"{wf.format} file; unwrapped {', '.join(wf.wrapper)}")
    if wf.dropped:
        notes.append(f"dropped the classifier head ({', '.join(wf.dropped[:3])})")
    return wf, f"{key_hint}: {path}", notes


def _timm_filter(state: dict[str, torch.Tensor], vit: nn.Module, where: str) -> dict[str, torch.Tensor]:
    """timm's own checkpoint filter; its assertions on shapes it cannot adapt become one error."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        return checkpoint_filter_fn(state, vit)
    except (AssertionError, RuntimeError, ValueError, KeyError) as e:
        raise WeightsError(f"{where}: timm cannot adapt this file to the model ({type(e).__name__}: {e}); "
                           "check model.backbone.name / kwargs against `vidpeft weights inspect`") from None


def load_video_swin(swin: nn.Module, path: str | Path, name: str, *, key_hint: str = DEFAULT_KEY,
                    quiet: bool = False) -> LoadReport:
    """torchvision ``swin3d_*`` files as they are; Video Swin release / MMAction2 files renamed."""
    wf, where, notes = _read(path, key_hint, "video_swin")
    state, more = convert_for_family("video_swin", wf.tensors)
    notes += more + resize_swin_tables(state, swin, where)
    return load_strict(swin, state, where=where, family="video_swin", name=name, notes=notes, quiet=quiet)


def load_timm_vit(vit: nn.Module, path: str | Path, name: str, *, key_hint: str = DEFAULT_KEY,
                  quiet: bool = False) -> LoadReport:
    """timm files; open_clip / OpenAI CLIP files and position-embedding resampling through timm's
    own checkpoint filter (what ``timm.create_model(pretrained=...)`` applies)."""
    wf, where, notes = _read(path, key_hint, "timm_vit")
    notes += quick_gelu_note(wf, vit, "timm_vit", name)
    state = wf.tensors
    pos = state.get("pos_embed", state.get("visual.positional_embedding"))
    patch = state.get("patch_embed.proj.weight", state.get("visual.conv1.weight"))
    if "visual.conv1.weight" in state:
        notes.append("converted open_clip / OpenAI CLIP image tower to timm's layout")
    state = _timm_filter(state, vit, where)
    own = vit.state_dict()
    if pos is not None and "pos_embed" in own and tuple(own["pos_embed"].shape[-2:]) != tuple(pos.shape[-2:]):
        notes.append(f"resampled pos_embed from {pos.shape[-2]} to {own['pos_embed'].shape[1]} tokens")
    kernel = own.get("patch_embed.proj.weight")
    if patch is not None and kernel is not None and patch.shape[-2:] != kernel.shape[-2:]:
        notes.append("resampled patch_embed.proj.weight from {}x{} to {}x{} (timm's FlexiViT resampling)".format(
            *patch.shape[-2:], *kernel.shape[-2:]))
    return load_strict(vit, state, where=where, family="timm_vit", name=name, notes=notes, quiet=quiet)


def load_vivit(model: nn.Module, path: str | Path, name: str, *, key_hint: str = DEFAULT_KEY,
               quiet: bool = False) -> LoadReport:
    """A vidpeft ViViT file loads everything (temporal positions resized to ``num_frames``); a
    timm ViT file loads the spatial transformer only."""
    wf, where, notes = _read(path, key_hint, "vivit")
    state = wf.tensors
    if any(k.startswith("spatial.") for k in state):
        notes += resize_1d_pos(state, model.state_dict(), "temporal.pos_embed")
        return load_strict(model, state, where=where, family="vivit", name=name, notes=notes, quiet=quiet)
    notes += quick_gelu_note(wf, model.spatial, "timm_vit", name)
    notes.append("timm ViT file: loads the spatial transformer; the temporal one stays at random init")
    state = _timm_filter(state, model.spatial, where)
    return load_strict(model.spatial, state, where=where, family="timm_vit", name=name, notes=notes, quiet=quiet)


def load_videomae(model: nn.Module, path: str | Path, name: str, *, key_hint: str = DEFAULT_KEY,
                  quiet: bool = False) -> LoadReport:
    """VideoMAE release (fine-tuned or pre-training encoder) and Hugging Face files; the position
    table is fixed (sinusoidal), so nothing needs resizing for another clip size."""
    wf, where, notes = _read(path, key_hint, "videomae")
    state, more = convert_for_family("videomae", wf.tensors)
    own = model.state_dict()
    if "norm.weight" in state and "fc_norm.weight" not in state and "fc_norm.weight" in own:
        raise WeightsError(f"{where}: a pre-training encoder (final norm, no fc_norm): set "
                           "model.backbone.kwargs.use_mean_pooling: false")
    if "fc_norm.weight" in state and "norm.weight" in own:
        raise WeightsError(f"{where}: a fine-tuned file (fc_norm after mean pooling): set "
                           "model.backbone.kwargs.use_mean_pooling: true (the default)")
    return load_strict(model, state, where=where, family="videomae", name=name, notes=notes + more, quiet=quiet)


def load_open_clip(model: nn.Module, path: str | Path, name: str, *, text: bool = True,
                   key_hint: str = DEFAULT_KEY, quiet: bool = False) -> LoadReport:
    """open_clip state dicts, OpenAI CLIP TorchScript archives and timm-layout CLIP towers, with
    open_clip's own adaptations (as its ``load_checkpoint``): scalar/1-d ``logit_scale``, a zero
    ``logit_bias`` where the model has one, image and text position embeddings resized.
    ``text=False``: only the image tower is loaded (and must be complete); the text tower's tensors
    in the file are ignored, and said."""
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    wf, where, notes = _read(path, key_hint, "openclip_vit")
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
