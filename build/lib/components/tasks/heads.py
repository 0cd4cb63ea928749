"""Several tasks in one model, one per head (a multi-dataset model): the packed target they share.

Ray Data gives every column of a batch one dtype and shape, but heads of different tasks have
different targets (a class index, a multi-hot vector, regression values, each of its own width).
So every clip carries ``target`` float32 (W,) with W = the widest head, plus ``dataset_index`` (its
head): each head's own ``Task.dense`` row in columns [0, k), zeros after (``pack`` on the driver,
``Task.from_dense`` per head on the workers). Nothing outside this module knows that layout.

The loss is sample-weighted: the mean over the batch's clips of each clip's own task loss, so a
dataset's mixing ratio is its expected share of the gradient.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from components.tasks.base import Task, make_task


class Heads(Task):
    kind = "multi_dataset"
    column = "packed_target"
    headline = "loss"
    headline_mode = "min"

    def __init__(self, num_outputs: int = 0, heads: Sequence[tuple[str, Task]] = ()) -> None:
        super().__init__(num_outputs or max((t.num_outputs for _, t in heads), default=0))
        self.names = [name for name, _ in heads]
        self.tasks = [task for _, task in heads]

    @classmethod
    def from_configs(cls, heads) -> "Heads":
        """From head configs with ``name``, ``task`` and ``num_outputs`` (``model.heads``)."""
        return cls(heads=[(h.name, make_task(h.task, h.num_outputs)) for h in heads])

    def decode(self, value) -> np.ndarray:
        return np.asarray(value, dtype=np.float32)

    def pack(self, head: int, column, clip_ids) -> np.ndarray:
        """One head's target column -> (N, W) float32 packed rows (errors name the clip)."""
        rows = self.tasks[head].dense(column, clip_ids)
        out = np.zeros((rows.shape[0], self.num_outputs), dtype=np.float32)
        out[:, : rows.shape[1]] = rows
        return out

    def index(self, batch_size: int, dataset_index: torch.Tensor | None, device) -> torch.Tensor:
        """Each clip's head (absent = head 0); an index out of range raises."""
        if dataset_index is None:
            return torch.zeros(batch_size, dtype=torch.long, device=device)
        index = dataset_index.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self.tasks)):
            raise ValueError(f"dataset_index out of range [0, {len(self.tasks)}): {index.unique().tolist()}")
        return index

    def loss(self, logits, target, dataset_index=None):
        index = self.index(logits.shape[0], dataset_index, logits.device)
        total = logits.sum() * 0.0  # stays in the graph when a batch is empty
        for d, task in enumerate(self.tasks):
            rows = index == d
            if rows.any():
                part = logits[rows, : task.num_outputs].float()
                total = total + task.per_sample_loss(part, task.from_dense(target[rows])).sum()
        return total / max(logits.shape[0], 1)

    def average_views(self, logits, views):
        if views == 1:
            return logits
        raise ValueError("multi-view evaluation is not supported with several heads (their score averaging "
                         "follows each head's task)")

    def accumulator(self) -> "HeadsAccumulator":
        return HeadsAccumulator(self)


class HeadsAccumulator:
    """One ``MetricAccumulator`` per head, over its own head's outputs.

    Call ``route(dataset_index)`` before each ``update`` (or use ``add_batch``). ``compute`` returns
    the overall ``loss`` (clip-weighted, as trained) and ``<name>_<metric>`` per head; ``merge``
    combines workers' accumulators exactly.
    """

    def __init__(self, task: Heads) -> None:
        self.task = task
        self.accs = [t.accumulator() for t in task.tasks]
        self.count = 0
        self.loss_sum = 0.0
        self._index: torch.Tensor | None = None

    def route(self, dataset_index: torch.Tensor) -> None:
        """The heads of the rows the next ``update`` receives."""
        self._index = dataset_index

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float | None = None) -> None:
        if self._index is None:
            raise RuntimeError("update needs route(dataset_index) first")
        index, self._index = self._index.long(), None
        n = logits.shape[0]
        self.count += n
        if loss is not None:
            self.loss_sum += float(loss) * n
        logits = logits.detach().float()
        for d, (task, acc) in enumerate(zip(self.task.tasks, self.accs)):
            rows = index == d
            if rows.any():
                part, y = logits[rows, : task.num_outputs], task.from_dense(target[rows])
                acc.update(part, y, task.loss(part, y).item())

    def add_batch(self, logits: torch.Tensor, batch: dict, loss: float | None = None) -> None:
        self.route(batch["dataset_index"])
        self.update(logits, batch["target"], loss)

    def add_part(self, name: str, value: float, n: int) -> None:
        """Named loss terms are per model, not per head: a multi-head model reports none."""

    def merge(self, other: "HeadsAccumulator") -> None:
        self.count += other.count
        self.loss_sum += other.loss_sum
        for mine, theirs in zip(self.accs, other.accs):
            mine.merge(theirs)

    def compute(self, names: dict[str, list[str]] | None = None) -> dict[str, float]:
        """``names``: regression target names per head (metric names ``<head>_mse_<target>``)."""
        if self.count == 0:
            return {}
        out = {"loss": self.loss_sum / self.count}
        for name, acc in zip(self.task.names, self.accs):
            targets = names.get(name) if isinstance(names, dict) else None
            out.update({f"{name}_{k}": v for k, v in acc.compute(targets).items()})
        return out

