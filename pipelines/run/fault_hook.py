"""A fault at a chosen point of a run, for the fault tests only: a Train worker SIGKILLs itself there (or holds).

Tests set ``VIDPEFT_TEST_FAULT`` in the `vidpeft train` driver's environment, e.g.
``point=before_report,epoch=1,once=/tmp/x/killed`` or ``point=batch,epoch=1,batch=2,once=...``; the
driver passes it to the workers in the run plan (a worker's environment is its raylet's, not the
driver's). The ``once`` file is created just before the kill, so the restarted worker runs through.
Points: ``batch`` (after training batch ``batch`` of epoch ``epoch``, counted from 1) and
``before_report`` (epoch ``epoch``'s metrics and checkpoint made, not yet reported to Ray).
``action=hold`` makes rank 0 wait there instead (up to 600 s), so a test's signal lands while the run is
surely mid-way, however fast its epochs are on a given machine. An optional ``clip_log=FILE`` field makes every
worker append the (row, epoch) pairs it trains on to FILE, one "epoch row" line each, so a test can count each
clip of an epoch over a kill and its restart.
Several faults, each with its own ``once`` file, are joined with ``;``: one run is then killed at each in turn
(a restart per kill, as many as ``scaling.max_failures`` allows). Without the variable nothing here does anything.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

FAULT_ENV = "VIDPEFT_TEST_FAULT"
POINTS = ("batch", "before_report")
ACTIONS = ("kill", "hold")
HOLD_S = 600.0


def fault_from_env() -> str:
    """The driver's side: the spec to hand to the workers ('' = none). A bad spec fails the run early."""
    spec = os.environ.get(FAULT_ENV, "")
    faults(spec)
    return spec


def faults(spec: str) -> list[dict[str, str]]:
    """The faults of ``spec`` (``;``-separated), each parsed."""
    return [parse(one) for one in spec.split(";") if one.strip()]


def parse(spec: str) -> dict[str, str]:
    fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    if (fields.get("point") not in POINTS or "epoch" not in fields or "once" not in fields
            or fields.get("action", "kill") not in ACTIONS):
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected point={'|'.join(POINTS)},epoch=N[,batch=K],once=FILE"
                         f"[,action={'|'.join(ACTIONS)}]")
    return fields


def reached(spec: str, point: str, epoch: int, batch: int = 0) -> None:
    """Called by rank 0 at each point: dies (or holds) at the first fault of ``spec`` naming this point that has
    not yet happened (its ``once`` file absent)."""
    for f in faults(spec):
        if f["point"] != point or int(f["epoch"]) != epoch or (point == "batch" and int(f.get("batch", 1)) != batch):
            continue
        marker = Path(f["once"])
        if marker.exists():
            continue
        marker.write_text(f"{point} epoch {epoch} batch {batch}\n")
        if f.get("action", "kill") == "hold":  # the test signals the run now; a signal interrupts the sleep
            deadline = time.monotonic() + HOLD_S
            while time.monotonic() < deadline:
                time.sleep(0.1)
            return
        os.kill(os.getpid(), signal.SIGKILL)


def on_batch(spec: str, epoch: int, hook):
    """``hook`` (the engine's on_batch callback) that also counts batches toward a ``batch`` fault."""
    if not spec:
        return hook
    seen = [0]

    def call(*args, **kwargs):
        result = hook(*args, **kwargs)
        seen[0] += 1
        reached(spec, "batch", epoch, seen[0])
        return result

    return call


def clip_logger(spec: str):
    """A function appending a batch's (row, epoch) pairs to the spec's ``clip_log`` file; None without one."""
    path = next((f["clip_log"] for f in faults(spec) if f.get("clip_log")), None)
    if not path:
        return None

    def log(pairs) -> None:
        with open(path, "a") as f:  # one write per batch: lines of several workers never interleave
            f.write("".join(f"{int(e)} {int(r)}\n" for r, e in pairs))

    return log
