"""What a Train worker does after each training batch: progress lines (rank 0) and, every
``log.metrics_steps`` optimizer steps, the step's loss, learning rate and clips/s into MLflow."""

from __future__ import annotations

import time

from pipelines.run.progress import Progress
from pipelines.run.progress_relay import BAR
from pipelines.runtime.phase_log import mark


class StepWatch:
    """``on_batch`` hook for ``run_pass`` (see components/engine/loop.py)."""

    def __init__(self, cfg, label: str, total_batches: int, step, device, *, enabled: bool, log=None,
                 uri: str | None = None, run_id: str | None = None, post=None, logged_before: int = 0) -> None:
        lc = cfg.log
        self.step = step  # the TrainStep: its optimizer (LR) and its count of optimizer steps
        # post: the driver's live board (pipelines/run/progress_relay.py) redraws the bar; else plain lines
        self.progress = Progress(label, total_batches, every_steps=lc.progress_steps,
                                 every_seconds=lc.progress_seconds, live=post is not None, device=device,
                                 enabled=enabled and lc.level != "quiet",
                                 out=(lambda line: post(BAR, line)) if post is not None else None)
        self.every = lc.metrics_steps if enabled and log is not None else 0
        self.log, self.uri, self.run_id, self.logged_before = log, uri, run_id, logged_before
        self.logged_update = step.updates
        self.window_clips, self.window_start = 0, time.perf_counter()

    def lr(self) -> float:
        return self.step.optimizer.param_groups[0]["lr"]

    def __call__(self, clips: int, loss: float | None) -> None:
        mark("step")
        self.progress.update(clips, loss, self.lr())
        self.window_clips += clips
        updates = self.step.updates
        # logged_before: the last step already in MLflow (an epoch redone after a restart adds no second point)
        if self.every and updates - self.logged_update >= self.every and loss is not None and updates > self.logged_before:
            now = time.perf_counter()
            metrics = {"step_train_loss": loss, "step_lr": self.lr(),
                       "step_clips_per_sec_rank0": self.window_clips / max(now - self.window_start, 1e-9)}
            self.log(self.uri, self.run_id, metrics, step=updates)
            self.logged_update, self.window_clips, self.window_start = updates, 0, now

    def close(self) -> None:
        self.progress.close()
