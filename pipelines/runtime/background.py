"""One call run on a thread beside the caller's own work, its result or its exception taken later.

A run's driver starts MLflow's run this way (about a second of imports and store queries) while it attaches to
Ray and plans its datasets (pipelines/run/train.py: ``TrainRun.open``), and takes the run id before the
training loop starts. What the call raises is raised where its result is taken, as if it had run there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Background:
    """``fn()`` on a daemon thread from construction on."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as e:  # handed to the thread that takes the result
            self._error = e

    def result(self) -> Any:
        """Wait for the call; its return value, or what it raised (raised once)."""
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the call to end, raising nothing (the caller is already
        handling an error of its own; a call still running after that is left to end with the process)."""
        self._thread.join(timeout)
