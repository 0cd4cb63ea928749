"""A stop signal always stops the driver: SIGTERM acts as Ctrl-C, and the wait for it is bounded.

During ``trainer.fit()`` SIGTERM (`ray job stop`, a pod shutting down) is handed to Ray Train's
SIGINT handler, which aborts the workers and keeps the checkpoints written so far. That handler
waits on Ray (``ray.get``); on a loaded machine, or while Ray is still starting, it can wait for
minutes. So the first signal also starts a watchdog: if the run has not stopped within the grace
period (VIDPEFT_STOP_GRACE_S, default 60 s) the process exits with code 130, and a second signal
exits at once. Checkpoints are written atomically, so exiting then loses only the epoch in progress.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

GRACE_ENV = "VIDPEFT_STOP_GRACE_S"
EXIT_CODE = 130  # as a shell reports a Ctrl-C


def _force_exit(reason: str) -> None:
    print(f"[vidpeft] {reason}: exiting now; the checkpoints written so far are kept (rerun with --resume)",
          file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


@contextmanager
def stop_like_ctrl_c(grace: float | None = None):
    """SIGTERM inside the block: Ray's SIGINT handler (or KeyboardInterrupt), bounded by ``grace``
    seconds; a second SIGTERM exits at once. Both handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():  # e.g. a Tune trial: its runner owns signals
        yield
        return
    grace = float(os.environ.get(GRACE_ENV, 60)) if grace is None else grace
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    stopping, finished = threading.Event(), threading.Event()

    def watchdog() -> None:
        if not finished.wait(grace):
            _force_exit(f"still stopping {grace:.0f} s after the stop signal")

    def on_term(signum, frame):
        if stopping.is_set():
            _force_exit("second stop signal")
        stopping.set()
        threading.Thread(target=watchdog, name="vidpeft-stop-watchdog", daemon=True).start()
        handler = signal.getsignal(signal.SIGINT)  # Ray Train installs its own inside fit()
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        finished.set()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
