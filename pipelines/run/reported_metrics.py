"""The metric names the train loop reports every epoch, known on the driver before anything starts: a
search's ``metric`` (or checkpoint.metric) that no epoch will report is one line, not a whole trial later.

The task's part is computed by the task's own accumulator on two dummy clips, so a new task kind needs no
list here; the bookkeeping keys are those train_loop.py adds to every epoch's metrics.
"""

from __future__ import annotations

import torch

from components.config import ConfigError

BOOKKEEPING = ("epoch", "lr", "clips_per_sec", "skipped_clips", "skipped_clips_total", "fallback_clips",
               "fallback_clips_total", "gflops", "gmacs", "trainable_params", "head_params", "backbone_params",
               "trainable_pct", "trainable_pct_with_head")


def task_metric_names(model_cfg) -> set[str] | None:
    """What ``MetricAccumulator.compute`` gives this model's task; None when it cannot be told from the
    config alone (one head per dataset: the names come from the datasets)."""
    from components.multihead.config import dataset_heads
    from components.tasks import MetricAccumulator, model_task

    if dataset_heads(model_cfg):
        return None
    task = model_task(model_cfg)
    n = max(model_cfg.head.num_outputs, 2)
    for width in (1, n):  # a class index per clip, or a row of n values (multi-label, regression)
        acc = MetricAccumulator(task, n)
        try:
            acc.update(torch.zeros(2, n), task.from_dense(torch.zeros(2, width)), loss=0.0)
            return set(acc.compute(None))
        except (RuntimeError, ValueError, IndexError, TypeError):
            continue
    return None


def check_reported(metric: str, cfg, where: str) -> None:
    """``metric`` is one the train loop reports each epoch for ``cfg``; else one ConfigError naming ``where``."""
    if metric in BOOKKEEPING:
        return
    names = task_metric_names(cfg.model)
    prefixes = ("train_", "val_") if cfg.data.val_split else ("train_",)
    stem = next((metric.removeprefix(p) for p in prefixes if metric.startswith(p)), None)
    if stem is not None and (names is None or stem in names or stem.startswith(("loss_", "mse_"))):
        return
    shown = sorted(f"{p}{n}" for p in prefixes for n in (names or {"loss"}))
    need = "" if cfg.data.val_split or not metric.startswith("val_") else " (val_ metrics need data.val_split)"
    raise ConfigError(f"{where}: {metric!r} is not a metric the train loop reports{need}; it reports "
                      f"{', '.join(shown)} and {', '.join(BOOKKEEPING[:3])}, ...")
