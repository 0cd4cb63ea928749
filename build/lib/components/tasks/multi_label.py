"""multi_label: a set of classes per clip (manifest column ``multi_label``, class indices) as a
multi-hot target; BCE-with-logits; mAP = mean over classes of average precision, classes with no
positive sample in the evaluated set left out of the mean (MMAction2's ``mean_average_precision``),
so a rare class absent from a split cannot score 0 or NaN. Views average their sigmoid probabilities."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from components.tasks.base import Task


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


class MultiLabel(Task):
    kind = "multi_label"
    column = "multi_label"
    headline = "mAP"

    def decode(self, value) -> np.ndarray:
        hot = np.zeros(self.num_outputs, dtype=np.float32)
        hot[np.asarray(value, dtype=np.int64)] = 1.0
        return hot

    def dense(self, column, clip_ids) -> np.ndarray:
        column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        parents = pc.list_parent_indices(column).to_numpy()
        bad = np.flatnonzero(values >= self.num_outputs)
        if bad.size:
            raise ValueError(f"clip {clip_ids[int(parents[bad[0]])]} has class {values[bad[0]]}, "
                             f"but num_outputs is {self.num_outputs}")
        out = np.zeros((len(column), self.num_outputs), dtype=np.float32)
        out[parents, values] = 1.0
        return out

    def per_sample_loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none").mean(dim=1)

    def probabilities(self, logits):
        return logits.float().sigmoid()

    def to_logits(self, scores):
        p = scores.double()  # logit of the mean sigmoid: its sigmoid is the mean probability
        return (p.log() - (-p).log1p()).float()

    def accumulate(self, acc, logits, target) -> None:
        acc.scores.append(torch.sigmoid(logits).cpu().numpy())
        acc.targets.append(target.detach().cpu().numpy())

    def metrics(self, acc, names) -> dict[str, float]:
        return {"mAP": mean_average_precision(np.concatenate(acc.scores), np.concatenate(acc.targets))}
