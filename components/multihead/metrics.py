"""Metrics of a multi-dataset run: one ``MetricAccumulator`` per dataset, over its own head's outputs.

Call ``route(dataset_index)`` before each ``update`` (the same arguments as a MetricAccumulator's,
with packed targets and (B, W) logits). ``compute`` returns the overall ``loss`` (clip-weighted, as
trained) and ``<name>_<metric>`` per dataset (``<name>_loss``, ``<name>_top1``, ``<name>_mAP``,
``<name>_mse``, ...); ``merge`` combines workers' accumulators exactly, like MetricAccumulator's.
"""

from __future__ import annotations

import torch

from components.multihead.config import DatasetHeadConfig
from components.multihead.targets import unpack_target
from components.tasks import MetricAccumulator, per_sample_loss


class DatasetMetrics:
    def __init__(self, heads: list[DatasetHeadConfig]) -> None:
        self.heads = list(heads)
        self.accs = [MetricAccumulator(h.task, h.num_outputs) for h in self.heads]
        self.count = 0
        self.loss_sum = 0.0
        self._index: torch.Tensor | None = None

    def route(self, dataset_index: torch.Tensor) -> None:
        """The datasets of the rows the next ``update`` receives."""
        self._index = dataset_index

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float | None = None) -> None:
        if self._index is None:
            raise RuntimeError("DatasetMetrics.update needs route(dataset_index) first")
        index, self._index = self._index.long(), None
        n = logits.shape[0]
        self.count += n
        if loss is not None:
            self.loss_sum += float(loss) * n
        logits = logits.detach().float()
        for d, (h, acc) in enumerate(zip(self.heads, self.accs)):
            rows = index == d
            if rows.any():
                part, y = logits[rows, : h.num_outputs], unpack_target(target[rows], h.task, h.num_outputs)
                acc.update(part, y, per_sample_loss(h.task, part, y).mean().item())

    def add_part(self, name: str, value: float, n: int) -> None:
        """Named loss terms are per model, not per dataset: a multi-dataset model reports none."""

    def merge(self, other: DatasetMetrics) -> None:
        self.count += other.count
        self.loss_sum += other.loss_sum
        for mine, theirs in zip(self.accs, other.accs):
            mine.merge(theirs)

    def compute(self, names: dict[str, list[str]] | None = None) -> dict[str, float]:
        """``names``: regression target names per dataset (metric names ``<dataset>_mse_<target>``)."""
        if self.count == 0:
            return {}
        out = {"loss": self.loss_sum / self.count}
        for h, acc in zip(self.heads, self.accs):
            targets = (names or {}).get(h.name) if isinstance(names, dict) else None
            out.update({f"{h.name}_{k}": v for k, v in acc.compute(targets).items()})
        return out
