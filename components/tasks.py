"""Task types: how targets are read from a batch, the loss, and streaming metric accumulators.

- single_label: cross-entropy; top-1 / top-5 accuracy.
- multi_label: BCE-with-logits on multi-hot targets; mAP = mean over classes of average precision,
  classes with no positive sample in the evaluated set are left out of the mean (MMAction2's
  ``mean_average_precision`` definition), so a rare class absent from a split cannot score 0 or NaN.
- regression: MSE per target and their mean (UDIVA reports the mean MSE of the five OCEAN traits).
Accumulators hold plain sums (or all scores for mAP) and ``merge``, so data-parallel workers can
gather and combine them exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TASKS = ("single_label", "multi_label", "regression")

# UDIVA v0.5's regression targets (Big Five personality traits, OCEAN order); pass as ``names`` to
# ``MetricAccumulator.compute`` (or a manifest's ``regression_names``) to get mse_openness, ...
OCEAN_TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")


def per_sample_loss(task: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) losses, each row's own (BCE / MSE averaged over its outputs): their mean is ``task_loss``."""
    if task == "single_label":
        return F.cross_entropy(logits, target.long(), reduction="none")
    if task == "multi_label":
        return F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none").mean(dim=1)
    if task == "regression":
        return F.mse_loss(logits, target.float(), reduction="none").mean(dim=1)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def task_loss(task: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The batch's mean loss (CE, BCE or MSE over every output)."""
    return per_sample_loss(task, logits, target).mean()


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class: mean precision at the rank of each positive (ties broken by order)."""
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    precision_at_k = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at_k * hits).sum() / hits.sum())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    aps = [average_precision(scores[:, c], targets[:, c] > 0) for c in range(scores.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


class MetricAccumulator:
    """Streaming metrics for one task; ``merge`` combines accumulators from several workers."""

    def __init__(self, task: str, num_outputs: int) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        self.task = task
        self.num_outputs = num_outputs
        self.count = 0
        self.loss_sum = 0.0
        self.sums: dict[str, float] = {}
        self.scores: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.parts: dict[str, float] = {}  # sums of named loss terms (multi-task models), weighted by clips

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float | None = None) -> None:
        n = logits.shape[0]
        if n == 0:
            return
        self.count += n
        if loss is not None:
            self.loss_sum += float(loss) * n
        logits = logits.detach().float()
        if self.task == "single_label":
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            hit = topk == target.view(-1, 1)
            self._add("top1", hit[:, 0].sum().item())
            self._add("top5", hit.any(dim=1).sum().item())
        elif self.task == "multi_label":
            self.scores.append(torch.sigmoid(logits).cpu().numpy())
            self.targets.append(target.detach().cpu().numpy())
        else:
            sq = (logits - target.float()).pow(2).sum(dim=0).cpu().numpy()
            for i, v in enumerate(sq):
                self._add(f"mse_{i}", float(v))

    def add_part(self, name: str, value: float, n: int) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + value * n

    def _add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value

    def merge(self, other: "MetricAccumulator") -> None:
        self.count += other.count
        self.loss_sum += other.loss_sum
        for k, v in other.sums.items():
            self._add(k, v)
        self.scores += other.scores
        self.targets += other.targets
        for k, v in other.parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + v

    def compute(self, names: list[str] | None = None) -> dict[str, float]:
        if self.count == 0:
            return {}
        out = {"loss": self.loss_sum / self.count}
        out.update({f"loss_{k}": v / self.count for k, v in self.parts.items()})
        if self.task == "single_label":
            out["top1"] = self.sums.get("top1", 0.0) / self.count
            out["top5"] = self.sums.get("top5", 0.0) / self.count
        elif self.task == "multi_label":
            out["mAP"] = mean_average_precision(np.concatenate(self.scores), np.concatenate(self.targets))
        else:
            per = [self.sums.get(f"mse_{i}", 0.0) / self.count for i in range(self.num_outputs)]
            for i, v in enumerate(per):
                out[f"mse_{names[i] if names and i < len(names) else i}"] = v
            out["mse"] = float(np.mean(per))
        return out
