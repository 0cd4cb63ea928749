"""Write a run's backbone alone, in its family's native key layout (`vidpeft export --backbone-only`).

The file is the same kind as a downloaded checkpoint: a later run names it in
`model.backbone.checkpoint`. It carries the backbone settings it was built with in its metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.adapters.unwrap import native_backbone_state
from components.checkpoint import save_safetensors
from components.config import to_dict
from pipelines.infer.trained import build_trained, load_trained

BACKBONE_KEY = "vidpeft_backbone"


def write_backbone_file(source: str | Path, out: str | Path, backbone_checkpoint: str | None = None) -> Path:
    """``source``: a run directory or a `vidpeft export` file; ``out``: the .safetensors to write."""
    trained = load_trained(source, backbone_checkpoint)
    model = build_trained(trained)
    # a kind with more than one tower (M2-CLIP: image + text) writes them all, as its library's checkpoints hold
    export = getattr(model, "export_backbone_state", None)
    state = export() if export is not None else native_backbone_state(model.backbone)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {BACKBONE_KEY: json.dumps(to_dict(trained.cfg.model.backbone), sort_keys=True)}
    return save_safetensors(out, state, meta)
