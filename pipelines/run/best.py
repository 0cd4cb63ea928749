"""Best checkpoint and early stopping (config sections `checkpoint` and `optim.patience`).

- Which metric: `checkpoint.metric`, default the task's primary validation metric (val_top1 max,
  val_mAP max, val_mse min; several datasets: val_loss min). Ray Train keeps the `checkpoint.keep` best
  checkpoints by it (CheckpointConfig's score attribute) plus the latest one (for resume).
- After fit the run's best is Ray's: `Result.get_best_checkpoint` over this fit, and, after a --resume,
  over the earlier fits of the same run too (their `Result.from_path`), so a best epoch trained before
  an interruption is not forgotten.
- `Patience` runs on every worker (all see the same gathered validation metrics, so all stop at the
  same epoch) and lives in the checkpoint's state.json, so a resumed run keeps counting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.config import ConfigError
from components.multihead.config import dataset_heads
from components.tasks import make_task
from pipelines.runtime.phase_log import mark


def checkpoint_metric(cfg) -> tuple[str | None, str]:
    """(metric, mode) that ranks checkpoints; metric None = no validation split, the latest is the best."""
    c = cfg.checkpoint
    if c.metric:
        mode = c.mode if c.mode != "auto" else ("min" if "loss" in c.metric or "mse" in c.metric else "max")
        if c.metric.startswith("val_") and not cfg.data.val_split:
            raise ConfigError(f"checkpoint.metric={c.metric} needs a validation split (data.val_split is empty)")
        return c.metric, mode
    if not cfg.data.val_split:
        if cfg.optim.patience:
            raise ConfigError("optim.patience needs a metric to watch: set data.val_split or checkpoint.metric")
        return None, "max"
    if dataset_heads(cfg.model):
        return "val_loss", "min"
    task = make_task(cfg.model.head.task)  # each task kind declares its primary metric and its direction
    return f"val_{task.headline}", (c.mode if c.mode != "auto" else task.headline_mode)


def better(a: float, b: float | None, mode: str) -> bool:
    """``a`` beats ``b`` (None = nothing yet); NaN never wins."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    return b is None or (a > b if mode == "max" else a < b)


@dataclass
class Patience:
    metric: str | None
    mode: str
    patience: int  # epochs without improvement before stopping; 0 = never stop early
    best: float | None = None
    best_epoch: int = -1
    since_best: int = 0

    def update(self, epoch: int, metrics: dict) -> str | None:
        """Record this epoch's metrics; returns why to stop now, or None."""
        if self.metric is None:
            return None
        if self.metric not in metrics:
            raise ConfigError(f"checkpoint.metric: {self.metric!r} is not a reported metric; reported: "
                              f"{sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))}")
        value = float(metrics[self.metric])
        if better(value, self.best, self.mode):
            self.best, self.best_epoch, self.since_best = value, epoch, 0
        else:
            self.since_best += 1
        return self.reason() if self.exhausted() else None

    def exhausted(self) -> bool:
        return self.patience > 0 and self.metric is not None and self.since_best >= self.patience

    def reason(self) -> str:
        return (f"early stop: {self.metric} has not improved for {self.since_best} epoch(s) (optim.patience="
                f"{self.patience}); best {self.best:.4f} at epoch {self.best_epoch + 1}")  # 1-based, as the progress lines

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "since_best": self.since_best}

    def restore(self, state: dict | None) -> None:
        if state:
            self.best, self.best_epoch, self.since_best = state["best"], state["best_epoch"], state["since_best"]


def _candidates(result, storage: str) -> list[tuple]:
    """(checkpoint, metrics) Ray kept in this fit and in earlier fits of the run stored beside it."""
    import pyarrow.fs as pafs
    from ray.train import Result
    mark("fit_done")

    found = list(result.best_checkpoints or [])
    fs, root = pafs.FileSystem.from_uri(storage if "://" in storage else f"file://{storage}")
    current = str(result.path).rstrip("/").rsplit("/", 1)[-1]
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        name = info.path.rstrip("/").rsplit("/", 1)[-1]
        if info.type != pafs.FileType.Directory or name == current:
            continue
        try:
            earlier = Result.from_path(f"{storage.rstrip('/')}/{name}")
        except Exception:  # not a Ray Train run folder (or a fit killed before its first report)
            continue
        for ckpt, metrics in earlier.best_checkpoints or []:
            if fs.get_file_info(ckpt.path).type == pafs.FileType.Directory:
                found.append((ckpt, metrics))
    return found


def select_best(result, storage: str, metric: str | None, mode: str) -> tuple:
    """(checkpoint, its metrics) of the best epoch; the latest when there is no metric."""
    from ray.train import Result

    if metric is None or result.checkpoint is None:
        return result.checkpoint, dict(result.metrics or {})
    pool = _candidates(result, storage)
    # a NaN metric (a mid-epoch checkpoint, a diverged epoch) is never the best; a run folder's JSON snapshot
    # keeps it as null
    scored = [(c, m) for c, m in pool if isinstance(m.get(metric), (int, float)) and not math.isnan(m[metric])]
    if not scored:
        return result.checkpoint, dict(result.metrics or {})
    scored.sort(key=lambda cm: cm[1].get("epoch", 0))  # a tie goes to the earliest epoch, as Ray keeps the first
    # Ray's own selection over every kept checkpoint of the run (this fit and, after --resume, earlier ones)
    merged = Result(metrics=result.metrics, checkpoint=result.checkpoint, error=None, path=result.path,
                    best_checkpoints=scored)
    best = merged.get_best_checkpoint(metric, mode)
    # the same epoch may be listed twice (a finished run resumed re-reports its last state): any copy will do
    return best, next(m for c, m in scored if c == best)


def summarise(best_metrics: dict, last: dict, metric: str | None, mode: str) -> dict:
    """metrics.json: the best epoch's metrics, which epoch that was, what the last epoch scored, and why
    the run stopped. Run-long counts (skipped clips so far) come from the last epoch."""
    out = dict(best_metrics)
    out.update(best_epoch=best_metrics.get("epoch"), last_epoch=last.get("epoch"), checkpoint_metric=metric,
               checkpoint_mode=mode if metric else None,
               last={k: v for k, v in last.items() if k.startswith(("val_", "train_")) or k == "epoch"})
    for key in ("skipped_clips_total", "stop_reason", "health"):
        if key in last:
            out[key] = last[key]
    out.setdefault("stop_reason", None)
    return out
