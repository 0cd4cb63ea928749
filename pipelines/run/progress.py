"""Progress inside an epoch: a line every N optimizer steps or S seconds, or a live bar on a terminal.

Each line: step/total, clips/s, loss, learning rate, ETA and peak memory. Rank 0 of the Train
workers owns one ``Progress`` per pass; the other ranks print nothing. ``level`` ``quiet`` prints
nothing at all (the run's final table still is). Nothing here imports Ray: the loop hands in the
numbers, so the same class serves evaluate and predict.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Callable, TextIO

import torch

LEVELS = ("quiet", "info", "verbose")


def say(line: str, stream: TextIO | None = None) -> None:
    """Print one line once. In a Ray Train worker ``print`` is patched to log through Train's logger
    and, when stdout is wrapped, also to print: every line came out twice. A plain write does not."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


# per-run constants (in the final table and MLflow), or the epoch index the line already shows
_NOT_PER_EPOCH = {"epoch", "gflops", "gmacs", "trainable_params", "head_params", "backbone_params", "trainable_pct",
                  "trainable_pct_with_head", "skipped_clips_total", "fallback_clips_total",
                  "val_pred_share", "train_pred_share"}


def epoch_line(epoch: int, epochs: int, metrics: dict) -> str:
    """The end-of-epoch line: losses and metrics, lr and clips/s; skipped/fallback clips only when any."""
    parts = [f"[vidpeft] epoch {epoch + 1}/{epochs}"]
    for key, value in metrics.items():
        if key in _NOT_PER_EPOCH or key in ("lr", "clips_per_sec") or not isinstance(value, (int, float)):
            continue
        if key in ("skipped_clips", "fallback_clips"):
            if value:
                parts.append(f"{key.replace('_', ' ')} {int(value)}")
            continue
        parts.append(f"{key} {value:.4g}")
    if "lr" in metrics:
        parts.append(f"lr {metrics['lr']:.3g}")
    if "clips_per_sec" in metrics:
        parts.append(f"{metrics['clips_per_sec']:.1f} clips/s")
    return " | ".join(parts)


def peak_memory_gb(device: torch.device | str = "cpu") -> float:
    """Peak memory of this process: CUDA's allocator peak on a GPU, else the peak resident set."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb * (1 if sys.platform != "darwin" else 1 / 1024) / 1e6


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Counts batches of one pass and shows them every ``every_steps`` batches or ``every_seconds``.

    ``total``: planned batches (0 = unknown: no ETA); ``live``: redraw one line in place (a terminal)
    instead of printing one line per update; ``out``: where lines go (a callable taking a line).
    """

    def __init__(self, label: str, total: int = 0, *, every_steps: int = 0, every_seconds: float = 30.0,
                 live: bool = False, device: torch.device | str = "cpu", enabled: bool = True,
                 out: Callable[[str], None] | None = None, stream: TextIO | None = None) -> None:
        self.label, self.total = label, max(int(total), 0)
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.live, self.device, self.enabled = live, device, enabled
        self.stream = stream or sys.stdout
        self.out = out
        self.step = self.clips = 0
        self.start = self.last = time.perf_counter()
        self.shown_step = 0
        self._drawn = False

    def update(self, clips: int, loss: float | None = None, lr: float | None = None) -> str | None:
        """One batch done (``clips`` readable clips in it); returns the line when one was shown."""
        self.step += 1
        self.clips += clips
        if not self.enabled:
            return None
        now = time.perf_counter()
        due = (self.every_steps and self.step - self.shown_step >= self.every_steps) or (
            self.every_seconds and now - self.last >= self.every_seconds)
        if not (due or self.live and now - self.last >= 0.5):
            return None
        self.last, self.shown_step = now, self.step
        line = self.line(loss, lr, now)
        self._emit(line)
        return line

    def line(self, loss: float | None, lr: float | None, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.start
        rate = self.clips / max(elapsed, 1e-9)
        parts = [self.label, f"{self.step}/{self.total}" if self.total else f"{self.step}",
                 f"{rate:.1f} clips/s"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if lr is not None:
            parts.append(f"lr {lr:.3g}")
        if self.total and self.step < self.total:
            parts.append(f"ETA {_duration(elapsed / self.step * (self.total - self.step))}")
        else:
            parts.append(f"elapsed {_duration(elapsed)}")
        parts.append(f"peak mem {peak_memory_gb(self.device):.2f} GB")
        if self.live and self.total:
            done = min(self.step / self.total, 1.0)
            parts.insert(1, "[" + "#" * int(done * 20) + "." * (20 - int(done * 20)) + "]")
        return "[vidpeft] " + " | ".join(parts)

    def _emit(self, line: str) -> None:
        if self.out is not None:
            self.out(line)
        elif self.live:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
            self._drawn = True
        else:
            say(line, self.stream)

    def close(self) -> None:
        """End a live bar's line, so what is printed next starts on its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
