"""Trainable-only weights in safetensors, with the model config stored alongside for rebuilding.

A weights file holds just what trains (adapters, head, or the whole model under full fine-tuning)
and, in its metadata, the model config as JSON. Loading checks both: a file made for another
config fails with the keys that differ, instead of half-loading.

One tolerance: a module may list in ``unbuilt_keys`` the state-dict names (relative to itself) of parts
it leaves out on purpose because they cannot change its output, which earlier versions built (a CAA's
attention over one key token, AdapterFusion over one modality). Loading skips exactly those names, so
older runs still load; any other key the model lacks stays an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from components.io.fs import as_new_file
from components.model_config import drop_other_kinds

CONFIG_KEY = "vidpeft_model_config"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that train plus every persistent tensor inside adapters and heads."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if key in names or ".adapters." in key or key.startswith("head."):
            out[key] = value.detach().cpu().contiguous()
    return out


def unbuilt_keys(model: nn.Module) -> set[str]:
    """Every module's ``unbuilt_keys``, as the model's state-dict names."""
    return {f"{name}.{key}" if name else key
            for name, module in model.named_modules() for key in getattr(module, "unbuilt_keys", ())}


def without_unbuilt(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` minus the tensors of parts ``model`` does not build on purpose (``unbuilt_keys``)."""
    skip = unbuilt_keys(model)
    return {k: v for k, v in state.items() if k not in skip}


def save_safetensors(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomic: written beside the target, then renamed over it, so a half-written file never takes the
    name. safetensors creates its file owner-only (0600); it gets the mode any new file gets here
    (0644 under the usual umask), as the run's other outputs do."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    as_new_file(tmp)
    os.replace(tmp, path)
    return path


def save_weights(path: str | Path, state: dict[str, torch.Tensor], model_config: dict | None = None) -> None:
    metadata = {CONFIG_KEY: json.dumps(model_config, sort_keys=True)} if model_config is not None else None
    save_safetensors(path, state, metadata)


def read_weights_config(path: str | Path) -> dict | None:
    """The model config a weights file was saved with (files that saved every kind's sections: only its kind's)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return drop_other_kinds(json.loads(meta[CONFIG_KEY]), str(path)) if CONFIG_KEY in meta else None


def _diff(a, b, prefix: str = "") -> list[str]:
    if a is None and isinstance(b, (list, dict)) and not b:  # a list field newer than the file, left empty
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and any(isinstance(v, dict) for v in a):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{prefix}.{i}")]  # adapters.0.key
    return [] if a == b else [f"{prefix}: checkpoint {a!r} vs current {b!r}"]


# Keys that do not change what a weights file holds: where weights were first taken from, and
# whether an adapter, or parts of it, was frozen in the run that saved them (staged training).
NEUTRAL_SUFFIXES = (".init_from", ".trainable", ".train_only", ".freeze")


def config_differences(saved: dict | None, current: dict | None, ignore: tuple[str, ...] = ()) -> list[str]:
    if saved is None or current is None:
        return []
    return [
        d for d in _diff(saved, current)
        if not d.startswith(ignore) and not d.split(":", 1)[0].endswith(NEUTRAL_SUFFIXES)
    ]


def load_weights(
    model: nn.Module, path: str | Path, model_config: dict | None = None, strict: bool = True, prefix: str = ""
) -> list[str]:
    """Load a weights file into ``model``; returns the keys loaded.

    With ``strict``, the model's trainable keys and the file's keys must match exactly and the saved
    config (if any) must equal ``model_config`` (ignoring where the backbone weights came from).
    ``prefix`` restricts loading to keys that start with it (initialise one adapter from a run).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if strict:
        diffs = config_differences(read_weights_config(path), model_config, ignore=("backbone.checkpoint",))
        if diffs:
            raise ValueError(f"{path} was saved for a different model config:\n  " + "\n  ".join(diffs))
    state = without_unbuilt(model, load_file(str(path)))
    own = model.state_dict()
    if prefix:
        state = {k: v for k, v in state.items() if prefix in k}
    expected = set(trainable_state_dict(model)) if strict else set(state)
    problems = []
    missing = sorted(expected - set(state))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if missing:
        problems.append(f"missing {len(missing)} key(s), e.g. {missing[:4]}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s), e.g. {unexpected[:4]}")
    if shapes:
        problems.append(
            "shape mismatch: " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes[:4])
        )
    if problems:
        raise ValueError(f"{path} does not fit this model: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    return sorted(state)


WEIGHTS_NAMES = ("weights.safetensors", "model.safetensors", "best.safetensors", "last.safetensors")


def resolve_weights_file(source: str | Path) -> Path:
    """A ``.safetensors`` file, or a run directory holding one (a well-known name, else the only one)."""
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise FileNotFoundError(f"weights file or run directory not found: {source}")
    for sub in ("", "checkpoints"):
        for name in WEIGHTS_NAMES:
            if (source / sub / name).is_file():
                return source / sub / name
    found = sorted(source.rglob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"{source}: expected one of {list(WEIGHTS_NAMES)} or a single .safetensors file, found "
        f"{[str(f.relative_to(source)) for f in found[:5]] or 'none'}"
    )


def _remote_weights_file(source: str) -> str:
    """A remote ``.safetensors`` object, or a bucket prefix holding one (the names a run directory uses)."""
    from components.io import fs as storage
    from components.io import join

    if source.endswith(".safetensors") and storage.exists(source):
        return source
    for sub in ("", "checkpoints"):
        for name in WEIGHTS_NAMES:
            candidate = join(source.rstrip("/") + "/", f"{sub}/{name}" if sub else name)
            if storage.exists(candidate):
                return candidate
    raise FileNotFoundError(f"weights file or run directory not found: {source} (expected one of "
                            f"{list(WEIGHTS_NAMES)} below it)")


def _load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a remote one is read whole into memory first."""
    from components.io import is_remote, read_bytes

    if is_remote(path):
        from safetensors.torch import load

        return load(read_bytes(str(path)))
    return load_file(str(path))


def init_adapter_from(model: nn.Module, key: str, source: str | Path) -> list[str]:
    """Initialise every tensor of adapter ``key`` from another run's weights file (matched by name).

    The file must hold this adapter's tensors for exactly the same modules and shapes (same backbone,
    sites and layers); anything else is an error naming what differs. Returns the keys loaded.
    """
    from components.io import StorageError, is_remote

    try:
        path = _remote_weights_file(str(source)) if is_remote(source) else resolve_weights_file(source)
    except StorageError as e:
        raise FileNotFoundError(str(e)) from None
    marker = f".adapters.{key}."
    # Match by module path without wrapper hops: ``blocks.0.mlp.adapters.x`` is stored as
    # ``blocks.0.base_layer.mlp.adapters.x`` when another adapter also wraps the whole block.
    canonical = lambda k: k.replace(".base_layer.", ".")  # noqa: E731
    own_names = {canonical(k): k for k in model.state_dict() if marker in k}
    own = {canonical(k): v for k, v in model.state_dict().items() if marker in k}
    if not own:
        raise ValueError(f"this model has no adapter named {key!r}")
    state = _load_safetensors(path)
    skip = {canonical(k) for k in unbuilt_keys(model)}
    found = {canonical(k): v for k, v in state.items() if marker in k and canonical(k) not in skip}
    if not found:
        keys = sorted({k.split(".adapters.", 1)[1].split(".", 1)[0] for k in state if ".adapters." in k})
        raise ValueError(f"{path} holds no weights for adapter {key!r} (it has adapters {keys or 'none'})")
    problems = []
    missing = sorted(set(own) - set(found))
    unexpected = sorted(set(found) - set(own))
    shapes = sorted(k for k in found if k in own and own[k].shape != found[k].shape)
    if missing:
        problems.append(f"missing {len(missing)} tensor(s), e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) this model does not have, e.g. {unexpected[:3]}")
    if shapes:
        problems.append("shape mismatch: " + ", ".join(f"{k} {tuple(found[k].shape)} vs {tuple(own[k].shape)}" for k in shapes[:3]))
    if problems:
        raise ValueError(f"{path}: adapter {key!r} does not fit this model: " + "; ".join(problems))
    model.load_state_dict({own_names[k]: v for k, v in found.items()}, strict=False)
    return sorted(own_names[k] for k in found)
