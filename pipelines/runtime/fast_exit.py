"""The `vidpeft` command's exit without the interpreter's teardown.

A finished command has imported torch, timm, open_clip, Ray and MLflow; Python's own shutdown then tears that
module graph down object by object, which took 11.5 s on a loaded 2-core machine (0.6 s with ``os._exit``; the
same imports, no Ray: benchmarks/fixed_cost.py's "process exit" phase, docs/fixed_cost.md). The console command
does what its exit must (output flushed, logging shut down, an MLflow run of the fluent API ended, Ray shut down:
a local instance this process started is stopped, a joined one is left), then ends the process at once.
Only the console entry uses it: ``main(argv)`` called from Python (tests, notebooks) returns as before.
"""

from __future__ import annotations

import logging
import os
import sys


def fast_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    logging.shutdown()
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.end_run()  # a no-op unless a fluent run is active (vidpeft's own runs are ended by their owners)
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    os._exit(code)
