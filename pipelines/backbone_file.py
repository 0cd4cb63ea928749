"""Write a run's backbone alone, in its family's native key layout (`vidpeft export --backbone-only`).

The file is the same kind as a downloaded checkpoint: a later run names it in
`model.backbone.checkpoint`. It carries the backbone settings it was built with in its metadata,
so `model.backbone` of the run that loads it can be checked against them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from components.backbones.export import native_backbone_state
from components.checkpoint import load_weights
from components.config import ConfigError, from_dict, load_yaml, to_dict
from components.model import build_model

BACKBONE_KEY = "vidpeft_backbone"


def write_backbone_file(run_dir: str | Path, out: str | Path) -> Path:
    """Rebuild the model of ``run_dir`` (config.yaml + weights.safetensors) and write its backbone."""
    from pipelines.config import ExperimentConfig

    run, out = Path(run_dir), Path(out)
    config_file, weights = run / "config.yaml", run / "weights.safetensors"
    for f in (config_file, weights):
        if not f.is_file():
            raise ConfigError(f"{run}: not a finished run directory ({f.name} is missing)")
    cfg = from_dict(ExperimentConfig, load_yaml(config_file))
    model = build_model(cfg.model, cfg.model.head.num_outputs)
    load_weights(model, weights, to_dict(cfg.model))
    state = native_backbone_state(model.backbone)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata={BACKBONE_KEY: json.dumps(to_dict(cfg.model.backbone), sort_keys=True)})
    os.replace(tmp, out)  # a half-written file never takes the name
    return out
