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


def convert_for_family(family: str, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The file's tensors renamed into the family's own layout, and what was done."""
    record = families().get(family)
    layout = detect_layout(state)
    if record is None or layout not in record.accepted_layouts:
        return state, []
    return record.convert(layout, state)
