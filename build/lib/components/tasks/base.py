"""The ``Task`` type: everything a task kind means, in one object per kind.

A Task owns: its manifest target column and how one cell of it is decoded into a target (and how a
whole column becomes dense (N, k) float rows, the form several tasks share in one packed batch),
its output size from the manifest, its per-sample loss, how several views' scores are averaged,
and what its metric accumulator sums. Nothing outside a Task branches on the task kind.

Adding a task kind: a new module with a ``Task`` subclass (``kind``, ``column``, the abstract methods)
and one ``register_task(YourTask)`` line in ``components/tasks/__init__.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from einops import rearrange


class Task:
    """One task kind with its output width (``num_outputs``, 0 = not known yet)."""

    kind: ClassVar[str] = ""
    column: ClassVar[str] = ""  # the manifest column holding the target
    headline: ClassVar[str] = ""  # the primary metric: a table shows it first, checkpoints rank by val_<it>
    headline_mode: ClassVar[str] = "max"  # max: higher is better (top1, mAP); min: lower is (mse, loss)
    has_classes: ClassVar[bool] = True  # outputs are named classes (top-k, class names); False: real-valued targets
    one_class_per_clip: ClassVar[bool] = False  # per-class accuracy and a confusion matrix apply (evaluate)

    def __init__(self, num_outputs: int = 0) -> None:
        self.num_outputs = int(num_outputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_outputs})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    # ---- manifest and data ------------------------------------------------------------------
    def outputs_from_manifest(self, manifest, train_table) -> int:
        """The output width a manifest implies: by default its class count (classification kinds)."""
        if manifest.num_classes <= 0:
            raise ValueError(f"{manifest.path} names no classes: set num_outputs")
        return manifest.num_classes

    def output_names(self, manifest) -> list[str] | None:
        """Names of the outputs a manifest gives (per-output metrics: mse_<name>), None = not named."""
        return None

    def decode(self, value: Any) -> np.ndarray:
        """One manifest cell -> this task's target for one clip (numpy, stacked into a batch)."""
        raise NotImplementedError

    def dense(self, column, clip_ids) -> np.ndarray:
        """A whole target column -> (N, k) float32 rows (k = 1 for a class index); a bad value raises
        ValueError naming its clip. The form several tasks share in one packed target (heads.py)."""
        raise NotImplementedError

    def from_dense(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, >= k) dense rows -> the target ``loss`` and the accumulator expect."""
        return rows[:, : self.num_outputs].float()

    # ---- loss and scores --------------------------------------------------------------------
    def per_sample_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B,) losses, each row's own: their mean is ``loss``."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_sample_loss(logits, target).mean()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K) outputs -> the scores that views average (and predictions report)."""
        return logits.float()

    def to_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """The inverse of ``probabilities``: averaged scores back in the space the accumulator reads."""
        return scores

    def average_views(self, logits: torch.Tensor, views: int) -> torch.Tensor:
        """(B*V, K) outputs, a video's views consecutive -> (B, K) scores of the mean view, as logits."""
        if views == 1:
            return logits
        return self.to_logits(average_probabilities(self, logits, views))

    # ---- metrics ----------------------------------------------------------------------------
    def accumulate(self, acc: "MetricAccumulator", logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch's statistics to ``acc`` (sums, or kept scores)."""
        raise NotImplementedError

    def metrics(self, acc: "MetricAccumulator", names: Sequence[str] | None) -> dict[str, float]:
        """This task's metrics from ``acc`` (``acc.count`` > 0); ``names``: per-output names."""
        raise NotImplementedError

    def accumulator(self) -> "MetricAccumulator":
        return MetricAccumulator(self)


def average_probabilities(task: Task, logits: torch.Tensor, views: int) -> torch.Tensor:
    """(B*V, K) -> (B, K): the mean over each video's V consecutive rows of ``task.probabilities``."""
    if logits.shape[0] % views:
        raise ValueError(f"{logits.shape[0]} outputs are not a multiple of {views} views")
    return rearrange(task.probabilities(logits), "(b v) k -> b v k", v=views).mean(dim=1)


TASK_KINDS: dict[str, type[Task]] = {}
HEAD_TASKS: list[str] = []  # kinds a single head can have (model.head.task), in registration order


def register_task(cls: type[Task], head: bool = True) -> type[Task]:
    """Make ``cls.kind`` a task kind; ``head``: a head can be configured with it (not a composite)."""
    TASK_KINDS[cls.kind] = cls
    if head and cls.kind not in HEAD_TASKS:
        HEAD_TASKS.append(cls.kind)
    return cls


def make_task(kind: str | Task, num_outputs: int = 0) -> Task:
    """The Task of ``kind`` (a Task passes through)."""
    if isinstance(kind, Task):
        return kind
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task {kind!r}; expected one of {tuple(HEAD_TASKS)}")
    return TASK_KINDS[kind](num_outputs)


class MetricAccumulator:
    """Streaming metrics for one task; ``merge`` combines accumulators from several workers exactly.

    Holds plain sums (``sums``), and the scores and targets a ranking metric needs (``scores``,
    ``targets``); what goes in them is the task's business (``Task.accumulate`` / ``Task.metrics``).
    """

    def __init__(self, task: str | Task, num_outputs: int = 0) -> None:
        self.task = make_task(task, num_outputs)
        self.num_outputs = self.task.num_outputs
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
        self.task.accumulate(self, logits.detach().float(), target)

    def add_batch(self, logits: torch.Tensor, batch: dict, loss: float | None = None) -> None:
        """``update`` from a model's logits and the batch they came from (its ``target``)."""
        self.update(logits, batch["target"], loss)

    def add_part(self, name: str, value: float, n: int) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + value * n

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value

    def merge(self, other: "MetricAccumulator") -> None:
        self.count += other.count
        self.loss_sum += other.loss_sum
        for k, v in other.sums.items():
            self.add(k, v)
        self.scores += other.scores
        self.targets += other.targets
        for k, v in other.parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + v

    def compute(self, names: Sequence[str] | None = None) -> dict[str, float]:
        if self.count == 0:
            return {}
        out = {"loss": self.loss_sum / self.count}
        out.update({f"loss_{k}": v / self.count for k, v in self.parts.items()})
        out.update(self.task.metrics(self, names))
        return out
