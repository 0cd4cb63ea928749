"""OpenAI CLIP weights were trained with QuickGELU (x * sigmoid(1.702 x)); a model built with GELU
runs them with the wrong activation and loses accuracy without any error. open_clip and timm name
their QuickGELU variants (``ViT-B-16-quickgelu``, ``vit_base_patch16_clip_quickgelu_224``) and warn;
this says the same when such a file meets a GELU model.

A file is taken as OpenAI's when it is a TorchScript CLIP archive (OpenAI ships only those:
``ViT-B-16.pt``), holds the archive's ``input_resolution`` / ``context_length`` / ``vocab_size``
attributes, or its name or one of its three parent folders says ``openai`` (hub cache folders and
open_clip tags: ``models--timm--vit_base_patch16_clip_224.openai/snapshots/<hash>/model.safetensors``,
``ViT-B-16/openai``); the tensors alone cannot tell.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from components.weights.reader import WeightsFile

OPENAI_ATTRS = ("input_resolution", "context_length", "vocab_size")


def is_openai_clip(wf: WeightsFile) -> bool:
    clip = "visual.conv1.weight" in wf.tensors or "norm_pre.weight" in wf.tensors
    return clip and (wf.format == "torchscript" or any(k in wf.tensors for k in OPENAI_ATTRS)
                     or "openai" in "/".join(Path(wf.path).parts[-4:]).lower())


def uses_quick_gelu(model: nn.Module) -> bool:
    return any("QuickGELU" in type(m).__name__ for m in model.modules())


def quick_gelu_name(family: str, name: str) -> str:
    """The QuickGELU variant of ``name`` in its library, or how to get one."""
    if family == "openclip_vit":
        import open_clip

        variant = f"{name}-quickgelu"
        how = f"model.backbone.name: {variant}" if variant in open_clip.list_models() else ""
        return (how + " or " if how else "") + "model.backbone.kwargs: {quick_gelu: true}"
    import timm

    variant = name.replace("_clip_", "_clip_quickgelu_", 1)
    if variant != name and variant in timm.list_models():
        return f"model.backbone.name: {variant}"
    return "a timm *_clip_quickgelu_* model name (timm_vit cannot switch the activation by kwargs)"


def quick_gelu_note(wf: WeightsFile, model: nn.Module, family: str, name: str) -> list[str]:
    """One note when OpenAI CLIP weights are loaded into a GELU model, naming what to use instead."""
    if not is_openai_clip(wf) or uses_quick_gelu(model):
        return []
    return [f"OpenAI CLIP weights, trained with QuickGELU, loaded into {name} which uses GELU (results will be "
            f"off): use {quick_gelu_name(family, name)}"]
