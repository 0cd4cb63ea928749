"""``model.backbone.kwargs`` checked against the architecture settings each family's constructor takes.

The kwargs reach library constructors (``timm.create_model``, ``open_clip.create_model``,
torchvision's ``SwinTransformer3d``), and those constructors also take loading switches
(``weights_only``, ``pretrained``, ``checkpoint_path``, ``cache_dir``, hub names, ...): one of those in a
config would let a config, or a run directory's config.yaml, unpickle a file and run its code, or
reach for a hub. So a key passes only when it is an architecture setting of that family (an
allow-list from the constructor's signature, minus loading switches and callable-typed hooks) and its
value is plain data of the right kind; anything else is a ConfigError naming the dotted key. Weights
come only from ``model.backbone.checkpoint``, through the safe reader in ``components.weights``.

Each family module builds its allow-list with ``allowed_from_signature`` / ``allowed_from_dataclass``
from its constructor and checks with ``check_kwargs`` (its record's ``check_kwargs``).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from components.config import ConfigError

KEY = "model.backbone.kwargs"

# Loading, download, device and class-switching switches of the constructors (never architecture).
LOADING_WORDS = ("pretrained", "checkpoint", "weights", "load", "cache", "url", "hub", "hf_",
                 "tokenizer", "jit", "device", "dtype", "precision", "custom_text", "timm_model")
# Parameters that take classes or callables (a string there is looked up, an object there is code).
CALLABLE_PARAMS = {"embed_layer", "embed_norm_layer", "norm_layer", "act_layer", "block_fn", "mlp_layer",
                   "attn_layer", "block", "downsample_layer", "patch_embed", "act_kwargs", "norm_kwargs",
                   "block_type", "cast_dtype"}
# Set by the family from other config keys (img_size, the task head), not through kwargs.
FIXED_PARAMS = {"self", "img_size", "num_classes", "image_size", "output_dict", "output_tokens", "in_chans",
                "global_pool"}

_PLAIN = (bool, int, float, str)


def _is_loading(name: str) -> bool:
    return any(w in name.lower() for w in LOADING_WORDS)


def allowed_from_signature(fn: Callable) -> dict[str, Any]:
    """name -> default (inspect.Parameter.empty when required) of ``fn``'s architecture parameters."""
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in FIXED_PARAMS or p.name in CALLABLE_PARAMS:
            continue
        if _is_loading(p.name):
            continue
        out[p.name] = p.default
    return out


def allowed_from_dataclass(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in FIXED_PARAMS - {"image_size"} or f.name in CALLABLE_PARAMS or _is_loading(f.name):
            continue
        out[f.name] = f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty
    return out


def _check_value(key: str, value: Any, default: Any) -> None:
    if value is None:
        raise ConfigError(f"{key}: no value (null); give one, or drop the key. In YAML flow style put a space "
                          "after each colon: {patch_size: 8}, not {patch_size:8}")
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, _PLAIN) for v in items):
        raise ConfigError(f"{key}: {value!r} is not plain data (a number, true/false, a string or a list of those)")
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool) and not (
            isinstance(value, (int, list)) and not isinstance(value, bool)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(default, float) and (isinstance(value, (bool, str))):
        raise ConfigError(f"{key}: expected a number, got {value!r}")


def check_kwargs(kwargs: dict, allowed: dict[str, Any], family: str, prefix: str = KEY,
                 nested: dict[str, dict[str, Any]] | None = None) -> dict:
    """``kwargs`` unchanged when every key is an allowed architecture setting with a plain value."""
    nested = nested or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{prefix}: expected a mapping of architecture settings, got {kwargs!r}")
    for name, value in kwargs.items():
        key = f"{prefix}.{name}"
        if ":" in str(name):
            raise ConfigError(f"{key}: malformed key (YAML flow style needs a space after each colon: "
                              f"{{{str(name).split(':')[0]}: {str(name).split(':', 1)[1]}}})")
        if _is_loading(str(name)):
            raise ConfigError(f"{key}: a loading setting, refused: pretrained weights come only from "
                              "model.backbone.checkpoint, read by the safe weights reader")
        if name in nested:
            if value is None or not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping, got {value!r}")
            check_kwargs(value, nested[name], family, key)
            continue
        if name not in allowed:
            raise ConfigError(f"{key}: not an architecture setting of the {family} family; accepted: "
                              f"{', '.join(sorted(allowed) + sorted(nested))}")
        _check_value(key, value, allowed[name])
    return dict(kwargs)
