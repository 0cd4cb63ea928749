"""Task kinds: what a target is, its loss, its metrics and how views average (see ``base.py``).

- single_label: cross-entropy; top-1 / top-5 accuracy (``single_label.py``).
- multi_label: BCE-with-logits on multi-hot targets; mAP (``multi_label.py``).
- regression: MSE per target and their mean (``regression.py``).
- multi_dataset: one of the above per head, targets packed in one vector (``heads.py``).
Accumulators hold plain sums (or all scores for mAP) and ``merge``, so data-parallel workers can
gather and combine them exactly. A new kind: one module, one ``register_task`` line below.
"""

from __future__ import annotations

from components.tasks.base import HEAD_TASKS, TASK_KINDS, MetricAccumulator, Task, make_task, register_task
from components.tasks.heads import Heads, HeadsAccumulator
from components.tasks.multi_label import MultiLabel, average_precision, mean_average_precision
from components.tasks.regression import OCEAN_TRAITS, Regression
from components.tasks.single_label import SingleLabel

register_task(SingleLabel)
register_task(MultiLabel)
register_task(Regression)
register_task(Heads, head=False)

TASKS = HEAD_TASKS  # the kinds a head can be configured with (model.head.task): the live registry, not a copy


def per_sample_loss(task: str | Task, logits, target):
    """(B,) losses of ``task``, each row's own: their mean is ``task_loss``."""
    return make_task(task, logits.shape[-1]).per_sample_loss(logits, target)


def task_loss(task: str | Task, logits, target):
    """The batch's mean loss (CE, BCE or MSE over every output)."""
    return make_task(task, logits.shape[-1]).loss(logits, target)


def model_task(model_config) -> Task:
    """The Task a model config trains (its kind's: one per dataset head, or its single ``head``)."""
    return model_config.task()


__all__ = [
    "TASKS", "TASK_KINDS", "OCEAN_TRAITS", "Task", "MetricAccumulator", "Heads", "HeadsAccumulator", "SingleLabel",
    "MultiLabel", "Regression", "make_task", "register_task", "model_task", "per_sample_loss", "task_loss",
    "average_precision", "mean_average_precision",
]
