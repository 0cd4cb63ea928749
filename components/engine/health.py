"""Training health: notice a run that has collapsed, diverged or stopped training some adapters.

Signals, each read once per evaluation (epoch):
  one class      one class takes at least ``one_class_share`` of the validation predictions for
                 ``patience`` consecutive evaluations;
  flat loss      the training loss stays within ``flat_tolerance`` (relative) of ln C, the loss of a
                 uniform guess over C classes, for ``patience`` consecutive evaluations;
  non-finite     any loss or metric is NaN or infinite (at once);
  zero gradient  trainable modules (adapters, heads) whose gradient was exactly zero (or absent) at
                 every optimizer step of the epoch (``GradProbe``).
The first two (and non-finite values) make the run "collapsed"/"nonfinite"; dead modules alone are
a warning ("stalled"). Plain PyTorch / numpy: the application decides what to print, tag or stop.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from components.tasks.single_label import PREDICTED

# What usually causes each signal, said with it.
CAUSES = {
    "one_class": "lr too high for the adapters, a prefix without its zero-init gate (model.prefix gate), "
                 "or adapters too wide for the backbone",
    "flat_loss": "lr too high or too low, a prefix without its zero-init gate, or adapters too wide for "
                 "the backbone",
    "nonfinite": "lr too high (try 10x lower), fp16 overflow (optim.amp=bf16 or off), or no grad_clip",
    "zero_grad": "a gate held at zero, a modality missing from every clip, attention over a single key "
                 "(a one-token modality: its weights are constant, so the queries and keys get no gradient), "
                 "or an lr so high the adapter saturated",
}


@dataclass
class Verdict:
    """``status``: collapsed | nonfinite | stalled; ``signal``: a key of CAUSES; ``detail``: what was seen."""

    status: str
    signal: str
    detail: str

    @property
    def line(self) -> str:
        return f"{self.status}: {self.detail}; likely causes: {CAUSES[self.signal]}"


def prediction_share(acc) -> float | None:
    """The most predicted class's share of an accumulator's predictions (single-label tasks count
    them; None for other tasks or when nothing was predicted)."""
    counts = {k: v for k, v in getattr(acc, "sums", {}).items() if k.startswith(PREDICTED)}
    total = sum(counts.values())
    return max(counts.values()) / total if total else None


def nonfinite_keys(metrics: dict) -> list[str]:
    return sorted(k for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v))


@dataclass
class HealthWatch:
    """Feed it one evaluation at a time (``update``); it returns the first ``Verdict`` of each kind."""

    num_classes: int = 0  # C for the flat-loss check (0 = not a classification run: no check)
    patience: int = 3
    one_class_share: float = 0.99
    flat_tolerance: float = 0.02
    _runs: Counter = field(default_factory=Counter)
    _said: set = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")

    def _streak(self, key: str, hit: bool) -> int:
        self._runs[key] = self._runs[key] + 1 if hit else 0
        return self._runs[key]

    def update(self, metrics: dict, pred_share: float | None = None,
               dead: list[str] | None = None) -> list[Verdict]:
        """``metrics``: this epoch's (``train_loss``, ``val_*``...); ``pred_share``: the most predicted
        class's share of the validation predictions; ``dead``: modules with zero gradient all epoch."""
        found = []
        bad = nonfinite_keys(metrics)
        if bad:
            found.append(Verdict("nonfinite", "nonfinite", f"non-finite {', '.join(bad)}"))
        share_hit = pred_share is not None and pred_share >= self.one_class_share
        n = self._streak("one_class", share_hit)
        if n >= self.patience:
            found.append(Verdict("collapsed", "one_class", f"one class takes {pred_share:.0%} of the "
                                                           f"predictions for {n} evaluations"))
        loss = metrics.get("train_loss")
        chance = math.log(self.num_classes) if self.num_classes > 1 else None
        flat = (chance is not None and isinstance(loss, (int, float)) and math.isfinite(loss)
                and abs(loss - chance) <= self.flat_tolerance * chance)
        n = self._streak("flat_loss", flat)
        if n >= self.patience:
            found.append(Verdict("collapsed", "flat_loss", f"train loss {loss:.3f} flat at ln {self.num_classes} "
                                                           f"= {chance:.3f} for {n} evaluations"))
        if dead:
            more = f" and {len(dead) - 3} more" if len(dead) > 3 else ""
            found.append(Verdict("stalled", "zero_grad", f"{len(dead)} trainable module(s) got zero gradient "
                                                         f"all epoch ({', '.join(dead[:3])}{more})"))
        new = [v for v in found if v.signal not in self._said]
        self._said.update(v.signal for v in new)
        return new


class GradProbe:
    """Which trainable modules received any non-zero gradient since the last ``dead()``.

    ``observe()`` runs before each optimizer step (after unscaling); a parameter's module is its
    name without the last part (``blocks.0.adapter.down.weight`` -> ``blocks.0.adapter.down``).
    The probe's first step is not looked at: with zero-initialised up-projections every part before them
    (down-projections, scales) gets a zero gradient at that step by design, and an epoch of one step (a
    tiny dataset) would be called stalled.
    """

    def __init__(self, model: nn.Module) -> None:
        self.groups: dict[str, list[torch.nn.Parameter]] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                self.groups.setdefault(name.rpartition(".")[0] or name, []).append(p)
        self.alive: set[str] = set()
        self.steps = 0
        self.first = True

    def observe(self) -> None:
        if self.first:  # the zero-init step (see the class docstring)
            self.first = False
            return
        self.steps += 1
        for module, params in self.groups.items():
            if module in self.alive:
                continue
            if any(p.grad is not None and bool(torch.any(p.grad != 0)) for p in params):
                self.alive.add(module)

    def dead(self) -> list[str]:
        """Modules whose gradient was zero at every step observed since the last call (none when no
        step was observed); resets for the next epoch."""
        out = [m for m in self.groups if m not in self.alive] if self.steps else []
        self.alive, self.steps = set(), 0
        return out
