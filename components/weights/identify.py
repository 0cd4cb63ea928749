"""Which family and size a file's tensors fit ("these weights look like swin3d_s").

Generic: each family's record (``components.backbone_family``) brings its own size guess, which
reads the architecture off the (family-layout) tensor shapes -- widths from the patch embedding,
depth from the block indices (``count_indices``), patch size from the embedding kernel -- and matches
it with the family's named sizes. Nothing is built, so this is cheap enough to run on every failed load.
"""

from __future__ import annotations

import re

import torch

from components.backbone_family import families
from components.weights.errors import WeightsError
from components.weights.layouts import UNSUPPORTED, convert_for_family, detect_layout, layout_family, layout_name


def count_indices(keys, pattern: str) -> int:
    """How many distinct values the first group of ``pattern`` takes over ``keys`` (blocks, stages)."""
    return len({m.group(1) for k in keys if (m := re.match(pattern, k))})


def guess_size(family: str, state: dict[str, torch.Tensor]) -> str | None:
    record = families().get(family)
    try:
        return record.guess_size(state) if record else None
    except Exception:  # a guess is a hint; a file too odd to guess gets none
        return None


def suggest_kwargs(family: str, state: dict[str, torch.Tensor]) -> tuple[str, dict] | None:
    """A named size and the ``model.backbone.kwargs`` over it that build what the (family-layout)
    tensors hold, where the family's shapes tell (e.g. Video Swin-L, which torchvision does not name)."""
    record = families().get(family)
    try:
        return record.suggest_kwargs(state) if record else None
    except Exception:  # a hint; a file too odd to read gets none
        return None


def flow(kwargs: dict) -> str:
    """``kwargs`` as YAML flow style: {embed_dim: 192, depths: [2, 2, 18, 2]}."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in kwargs.items()) + "}"


def looks_like(state: dict[str, torch.Tensor]) -> list[tuple[str, str | None]]:
    """(family, size or None) pairs the file's tensors would load into: the family that publishes
    the layout first, then those that also read it and have a size that fits (a timm CLIP tower: both)."""
    layout = detect_layout(state)
    owner = layout_family(layout)
    if owner is None:
        return []
    out = [(owner.name, guess_size(owner.name, convert_for_family(owner.name, state)[0]))]
    for reader in [f for f in families().values() if layout in f.reads]:  # listed when a size of theirs fits
        size = guess_size(reader.name, convert_for_family(reader.name, state)[0])
        if size is not None:
            out.append((reader.name, size))
    return out


def check_family_layout(family: str, state: dict[str, torch.Tensor], where: str) -> str:
    """The file's layout, or one error when it is a layout of another family (or of none)."""
    layout = detect_layout(state)
    if layout in UNSUPPORTED:
        raise WeightsError(f"{where}: {layout_name(layout)}")
    owner, record = layout_family(layout), families().get(family)
    if owner is not None and record is not None and layout not in record.accepted_layouts:
        other, size = looks_like(state)[0]
        name = f" and model.backbone.name: {size}" if size else ""
        raise WeightsError(f"{where}: a {layout_name(layout)} file, which the {family} family does not load: "
                           f"set model.backbone.family: {other}{name}")
    return layout
