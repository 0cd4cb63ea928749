"""Strict loading: every backbone tensor comes from the file and every file tensor is used.

A classifier head in the file is the one exception: it is dropped and said. Anything else that does
not fit -- missing, unexpected or differently shaped tensors -- is one error naming the file, the
configured family and size, the counts with the first few keys of each, and the size of the same
family the file's shapes fit, when there is one.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from components.weights.identify import flow, guess_size, suggest_kwargs
from components.weights.reader import WeightsError


@dataclass
class LoadReport:
    loaded: int = 0
    notes: list[str] = field(default_factory=list)  # conversions, dropped heads, resized tensors


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


_CAPTURE: list[list[str]] = []  # active capture_notes() blocks


@contextmanager
def capture_notes():
    """Collect the notes of loads inside the block instead of printing them (``weights inspect``)."""
    notes: list[str] = []
    _CAPTURE.append(notes)
    try:
        yield notes
    finally:
        _CAPTURE.remove(notes)


def say(where: str, notes: list[str]) -> None:
    """Tell the user what was done to the file's tensors (conversion, dropped head, resizing)."""
    if _CAPTURE:
        _CAPTURE[-1].extend(notes)
    elif notes:
        print(f"weights: {where}: {'; '.join(notes)}", file=sys.stderr, flush=True)


def check_fit(
    own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], *, where: str, family: str, name: str,
    head_prefixes: tuple[str, ...] = ("head.",), guess_from: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` without the classifier head, or a ``WeightsError`` saying why it does not fit ``own``."""
    notes: list[str] = []
    heads = [k for k in state if k.startswith(head_prefixes) and k not in own]
    if heads:
        notes.append(f"dropped the classifier head ({_first(heads)}): the task head replaces it")
        state = {k: v for k, v in state.items() if k not in heads}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = [f"{len(missing)} missing" + (f" ({_first(missing)})" if missing else ""),
                 f"{len(unexpected)} unexpected" + (f" ({_first(unexpected)})" if unexpected else ""),
                 f"{len(mismatched)} mismatched" + (f" ({_first(mismatched, 2)})" if mismatched else "")]
        hint = ""
        full = state if guess_from is None else guess_from
        guess = guess_size(family, full)
        if guess and guess != name:
            hint = f"; these weights look like {guess} (set model.backbone.name: {guess})"
        elif guess is None and (fit := suggest_kwargs(family, full)):
            hint = f"; no named size fits these weights: set model.backbone.kwargs: {flow(fit[1])}"
        elif guess is None and not (set(state) & set(own)):
            from components.weights.layouts import detect_layout, layout_name

            hint = f"; the file's layout is: {layout_name(detect_layout(full))}"
        raise WeightsError(f"{where}: does not fit {family} {name}: {', '.join(parts)}{hint}")
    return state, notes


def load_strict(
    model: nn.Module, state: dict[str, torch.Tensor], *, where: str, family: str, name: str,
    head_prefixes: tuple[str, ...] = ("head.",), notes: list[str] | None = None, quiet: bool = False,
    guess_from: dict[str, torch.Tensor] | None = None,
) -> LoadReport:
    """Load ``state`` into ``model`` after ``check_fit``; values are cast to the model's dtypes."""
    state, more = check_fit(model.state_dict(), state, where=where, family=family, name=name,
                            head_prefixes=head_prefixes, guess_from=guess_from)
    model.load_state_dict(state, strict=True)
    report = LoadReport(loaded=len(state), notes=list(notes or []) + more)
    if not quiet:
        say(where, report.notes)
    return report


# ---- resizing ------------------------------------------------------------------------------------

def resize_1d_pos(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], key: str,
                  prefix_tokens: int = 1) -> list[str]:
    """Linear interpolation of a (1, prefix + L, D) position embedding along L (in place)."""
    if key not in state or key not in own or state[key].shape == own[key].shape:
        return []
    old, new = state[key], own[key]
    if old.dim() != 3 or old.shape[-1] != new.shape[-1]:
        return []
    body = rearrange(old[:, prefix_tokens:].float(), "1 l d -> 1 d l")
    body = F.interpolate(body, size=new.shape[1] - prefix_tokens, mode="linear", align_corners=False)
    state[key] = torch.cat([old[:, :prefix_tokens].float(), rearrange(body, "1 d l -> 1 l d")], 1).to(old.dtype)
    return [f"resized {key} from {old.shape[1] - prefix_tokens} to {new.shape[1] - prefix_tokens} positions"]
