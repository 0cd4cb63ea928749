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


# Adapter fields added after campaigns were first keyed: dropped from each adapter's entry at their default.
# A list (model.adapters) is compared whole, so without this every cell with adapters would get a new key.
LATER_ADAPTER_FIELDS = {"train_only": [], "freeze": []}


def _without_later_adapter_fields(model: dict) -> None:
    """In place, every list of adapters under ``model`` (model.adapters, model.m2clip.text_adapters)."""
    for key, value in model.items():
        if isinstance(value, dict):
            _without_later_adapter_fields(value)
        elif isinstance(value, list) and key.endswith("adapters"):
            for entry in value:
                if isinstance(entry, dict):
                    for field, default in LATER_ADAPTER_FIELDS.items():
                        if entry.get(field, default) == default:
                            entry.pop(field, None)


def config_identity(data: dict) -> dict:
    """A resolved config (plain dict) reduced to what differs from the built-in defaults."""
    data = json.loads(json.dumps(data))
    if isinstance(data.get("model"), dict):
        _without_later_adapter_fields(data["model"])
    return without_defaults(data, builtin_defaults())
