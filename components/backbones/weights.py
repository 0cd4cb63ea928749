"""Load pretrained weights from a local file the user names (no hub access, no unsafe unpickling)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or a torch file read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, or not a torch file at all
        raise ValueError(f"{path}: not loadable as plain tensors (weights_only=True): {e}") from None
    for key in ("state_dict", "model", "module"):  # common wrappers around the weights
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_backbone_weights(model: nn.Module, path: str | Path, ignore_prefixes: tuple[str, ...] = ("head",)) -> None:
    """Strict load except for classifier heads; an error lists missing and mismatched keys."""
    load_state_into(model, read_state_dict(path), path, ignore_prefixes)


def load_state_into(
    model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, ignore_prefixes: tuple[str, ...] = ("head",)
) -> None:
    """Load ``state`` (read from ``path``) into ``model``; only classifier-head keys may be absent."""
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        details = ", ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:5])
        raise ValueError(f"{path}: shape mismatch for {len(mismatched)} tensor(s): {details}")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(ignore_prefixes)]
    if missing:
        raise ValueError(f"{path}: {len(missing)} backbone tensor(s) missing, e.g. {missing[:5]}")
