"""What identifies a resolved run config across vidpeft versions: the config minus what equals the
built-in defaults. A field added later (at its default), or a section that moved to one model kind
(``model.m2clip``, ``model.heads``), leaves the identity unchanged, so a finished campaign cell is
not rerun and an interrupted search still resumes after an upgrade."""

from __future__ import annotations

import json

from components.config import to_dict
from components.model_config import MODEL_CONFIGS
from pipelines.config import ExperimentConfig


def without_defaults(data, defaults):
    """``data`` without the entries equal to ``defaults`` (dicts recursively; lists compared whole)."""
    if not isinstance(data, dict) or not isinstance(defaults, dict):
        return data
    out = {}
    for k, v in data.items():
        if k in defaults and v == defaults[k]:
            continue
        if isinstance(v, dict):
            v = without_defaults(v, defaults.get(k))
            if not v and k in defaults:  # every entry at its default: the section as a whole is
                continue
        out[k] = v
    return out


def builtin_defaults() -> dict:
    """The experiment defaults, with every model kind's own sections at their defaults too, as when
    one ModelConfig held them all."""
    defaults = to_dict(ExperimentConfig())
    for kind_config in MODEL_CONFIGS.values():
        defaults["model"] = {**to_dict(kind_config()), **defaults["model"]}  # the shared keys' defaults win
    return defaults


def config_identity(data: dict) -> dict:
    """A resolved config (plain dict) reduced to what differs from the built-in defaults."""
    return without_defaults(json.loads(json.dumps(data)), builtin_defaults())
