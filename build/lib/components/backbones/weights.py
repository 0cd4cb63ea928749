"""Backwards-compatible names for the weight reader; the code lives in ``components.weights``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from components.weights.reader import read_weights
from components.weights.strict import load_strict


def read_state_dict(path: str | Path, *, key_hint: str = "model.backbone.checkpoint") -> dict[str, torch.Tensor]:
    """Tensors of a weights file (see ``components.weights.read_weights``)."""
    return read_weights(path, key_hint=key_hint)


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path,
                    ignore_prefixes: tuple[str, ...] = ("head",)) -> None:
    """Strict load of ``state`` (read from ``path``) into ``model``; only a classifier head may differ."""
    load_strict(model, state, where=str(path), family=type(model).__name__, name="",
                head_prefixes=tuple(ignore_prefixes))
