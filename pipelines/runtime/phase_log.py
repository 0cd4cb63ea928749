"""Phase marks for profiling a run's fixed cost (benchmarks/fixed_cost.py): ``VIDPEFT_PHASE_LOG=FILE``.

With the variable set, ``mark(name)`` appends ``name<TAB>time.time()<TAB>pid`` to FILE (one short
append per mark, from the driver and from Ray's worker and actor processes alike, which inherit the
variable); without it, ``mark`` does nothing. A mark never raises: profiling must not break a run.
"""

from __future__ import annotations

import os
import time

PHASE_LOG_ENV = "VIDPEFT_PHASE_LOG"


def mark(name: str) -> None:
    path = os.environ.get(PHASE_LOG_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:  # one write per line: appends from processes do not interleave
            f.write(f"{name}\t{time.time():.6f}\t{os.getpid()}\n")
    except OSError:
        pass


def read_marks(path: str | os.PathLike) -> list[tuple[str, float, int]]:
    """The marks in FILE, in file order: (name, unix time, pid); malformed lines skipped."""
    out = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 3:
            try:
                out.append((parts[0], float(parts[1]), int(parts[2])))
            except ValueError:
                continue
    return out
