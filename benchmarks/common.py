"""Shared helpers for the benchmark scripts: timing statistics, machine facts, isolated runs, JSON output.

Every benchmark writes ``benchmarks/results/<name>.json`` with a ``machine`` block (load average,
CPU count, torch version and threads, device) so a figure can be read next to how busy the machine
was when it was taken. Timings are summarised as median and spread over repetitions, never a mean
of a single run: on a small shared machine one slow repetition is common.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def summary(values: list[float]) -> dict[str, float]:
    """Median, min, max and relative spread ((max - min) / median) of repeated measurements."""
    if not values:
        return {"n": 0}
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / med if med else 0.0,
        "n": len(values),
        "values": list(values),
    }


def current_rss() -> int:
    """Resident set size of this process now, bytes (Linux /proc; falls back to the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss()


def peak_rss() -> int:
    """High-water mark of this process's resident set size, bytes (ru_maxrss is KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class LiveHeap:
    """Bytes the C heap holds in live allocations (glibc ``mallinfo2``: in-use arena chunks + mmapped
    chunks), sampled every ``interval`` s in a thread; ``peak`` is the largest sample since ``start``.

    On CPU, peak RSS also counts memory glibc keeps after ``free`` (holes between live chunks that
    it cannot return): the allocator's slack, hundreds of MiB in a ViT-B training step. The live
    figure is the CPU counterpart of CUDA's ``max_memory_allocated``. PyTorch releases the GIL inside
    its ops, so the thread samples during them; a peak shorter than the interval can be missed.
    ``available`` is False off glibc (then nothing is sampled)."""

    def __init__(self, interval: float = 0.002) -> None:
        from components.engine.host_memory import glibc

        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.available = glibc() is not None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        from components.engine.host_memory import mallinfo

        info = mallinfo()
        return info.uordblks + info.hblkhd if info is not None else 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.now())

    def start(self) -> "LiveHeap":
        self.peak = self.now()
        if self.available:
            self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.peak = max(self.peak, self.now())
        return self.peak


def machine(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on, including how loaded the machine was (1/5/15-min load)."""
    import torch

    info: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def pick_device(name: str) -> str:
    """``auto`` -> cuda when available, else cpu."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_isolated(script: Path, args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``script ARGS`` in a fresh interpreter; its last stdout line is a JSON result.

    A fresh process per configuration keeps one run's allocator state and peak RSS out of the next.
    """
    cmd = [sys.executable, str(script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def emit(result: dict[str, Any]) -> None:
    """A worker's result: one JSON line on stdout (read by ``run_isolated``)."""
    print(json.dumps(result), flush=True)


def write_result(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``results/<name>.json`` (or ``out``) atomically; returns the path."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def add_run_args(p: argparse.ArgumentParser, result_name: str) -> None:
    """--threads and --out, plus the hidden --worker/--case that a benchmark's isolated runs get."""
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--out", default="", help=f"result file (default benchmarks/results/{result_name}.json)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--case", default="", help=argparse.SUPPRESS)


def fmt_mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"
