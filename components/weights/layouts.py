"""Published key layouts, recognised from the key names, and their conversion to what a family builds.

Generic: each family's record (``components.backbone_family``) lists the layouts its weights are
published in (with a detector), the other families' layouts its loader also reads, and the
conversion to its own keys. Layouts no family builds are listed here, so such a file is called
unsupported by name instead of "unrecognised". Keys are seen after ``reader`` unwrapped
``state_dict`` / ``module.`` / ``backbone.``.
"""

from __future__ import annotations

import re

import torch

from components.backbone_family import BackboneFamily, families, published_layouts
from components.weights.errors import WeightsError

# layouts of published models no vidpeft family builds: name -> (what it is, detector)
UNSUPPORTED = {
    "mvit": ("MViT (torchvision mvit_*, MMAction2 / SlowFast MViT: pooled attention blocks.N.attn.pool_q); "
             "not supported: no vidpeft backbone family builds MViT",
             lambda state: any(re.search(r"blocks\.\d+\.attn\.(pool_[qkv]\.|rel_pos_[thw]$)", k) for k in state)),
}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    for name, (_, detect) in UNSUPPORTED.items():  # first: SlowFast's MViT also looks like VideoMAE
        if detect(state):
            return name
    for layout, _ in published_layouts():
        if layout.detect(state):
            return layout.name
    return "unknown"


def layout_name(layout: str) -> str:
    """What a user reads for a layout name."""
    if layout in UNSUPPORTED:
        return UNSUPPORTED[layout][0]
    found = [lay.description for lay, _ in published_layouts() if lay.name == layout]
    return found[0] if found else "unrecognised layout"


def layout_family(layout: str) -> BackboneFamily | None:
    """The family that publishes ``layout`` (None: unknown or unsupported)."""
    found = [fam for lay, fam in published_layouts() if lay.name == layout]
    return found[0] if found else None


def check_family_layout(family: str, state: dict[str, torch.Tensor], where: str) -> str:
    """The file's layout, or one error when it is a layout of another family (or of none)."""
    layout = detect_layout(state)
    if layout in UNSUPPORTED:
        raise WeightsError(f"{where}: {layout_name(layout)}")
    owner, record = layout_family(layout), families().get(family)
    if owner is not None and record is not None and layout not in record.accepted_layouts:
        from components.weights.identify import looks_like

        other, size = looks_like(state)[0]
        name = f" and model.backbone.name: {size}" if size else ""
        raise WeightsError(f"{where}: a {layout_name(layout)} file, which the {family} family does not load: "
                           f"set model.backbone.family: {other}{name}")
    return layout


def convert_for_family(family: str, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The file's tensors renamed into the family's own layout, and what was done."""
    record = families().get(family)
    layout = detect_layout(state)
    if record is None or layout not in record.accepted_layouts:
        return state, []
    return record.convert(layout, state)
