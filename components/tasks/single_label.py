"""single_label: one class per clip (manifest column ``label``); cross-entropy; top-1 / top-5 accuracy.
Views average their softmax probabilities (as a log, which ranks as the mean probability does)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from components.tasks.base import Task

PREDICTED = "pred/"  # accumulator sums "pred/<class>": how often each class was predicted


class SingleLabel(Task):
    kind = "single_label"
    column = "label"
    headline = "top1"
    one_class_per_clip = True

    def decode(self, value) -> np.ndarray:
        return np.int64(value)

    def dense(self, column, clip_ids) -> np.ndarray:
        labels = column.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(labels >= self.num_outputs)
        if bad.size:
            raise ValueError(f"clip {clip_ids[int(bad[0])]} has label {labels[bad[0]]}, "
                             f"but num_outputs is {self.num_outputs}")
        return labels.astype(np.float32)[:, None]  # exact in float32 below 2**24

    def from_dense(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[:, 0].round().long()

    def per_sample_loss(self, logits, target):
        if target.ndim == logits.ndim:  # soft (B, K) targets: mixup / cutmix / label smoothing
            return F.cross_entropy(logits, target.to(logits.dtype), reduction="none")
        return F.cross_entropy(logits, target.long(), reduction="none")

    def probabilities(self, logits):
        return logits.float().softmax(dim=-1)

    def to_logits(self, scores):
        return scores.log()

    def accumulate(self, acc, logits, target) -> None:
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices == target.view(-1, 1)
        acc.add("top1", hit[:, 0].sum().item())
        acc.add("top5", hit.any(dim=1).sum().item())
        classes, counts = logits.argmax(dim=1).unique(return_counts=True)
        for c, n in zip(classes.tolist(), counts.tolist()):  # predicted-class counts (training health)
            acc.add(f"{PREDICTED}{c}", n)

    def metrics(self, acc, names) -> dict[str, float]:
        return {"top1": acc.sums.get("top1", 0.0) / acc.count, "top5": acc.sums.get("top5", 0.0) / acc.count}
