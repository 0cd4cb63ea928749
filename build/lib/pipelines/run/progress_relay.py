"""A live progress bar on the driver's terminal for what rank 0 reports from inside a Ray Train worker.

Ray forwards a worker's output to the driver line by line, so a bar redrawn in place with "\\r"
cannot travel that way. When the driver's output is a terminal, it starts a small board actor; rank
0 posts its progress (redrawn in place) and its epoch lines (kept) to it, and a thread on the driver
draws them. When the output is not a terminal nothing changes: rank 0 prints plain lines.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Callable, TextIO

BAR, LINE = "bar", "line"  # a post redraws the bar, or prints a line that stays


class ProgressBoard:
    """Ray actor (no CPU): holds what rank 0 posted until the driver takes it."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str]] = []

    def post(self, kind: str, text: str) -> None:
        if kind == BAR and self.posts and self.posts[-1][0] == BAR:
            self.posts[-1] = (kind, text)  # only the newest bar matters
        else:
            self.posts.append((kind, text))

    def take(self) -> list[tuple[str, str]]:
        posts, self.posts = self.posts, []
        return posts


class LiveRelay:
    """Driver side: ``with LiveRelay() as relay:`` ... pass ``relay.name`` to the workers (None: not a
    terminal, or quiet: the workers print as before)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True, period: float = 0.25) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.period = period
        self.name: str | None = None
        self._board = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = ""

    def __enter__(self) -> LiveRelay:
        if not self.enabled:
            return self
        import ray

        self.name = f"vidpeft-progress-{os.getpid()}-{os.urandom(3).hex()}"
        self._board = ray.remote(num_cpus=0)(ProgressBoard).options(name=self.name).remote()
        ray.get(self._board.take.remote())  # started before the workers look it up
        self._thread = threading.Thread(target=self._run, name="vidpeft-progress", daemon=True)
        self._thread.start()
        return self

    def _draw(self, posts: list[tuple[str, str]]) -> None:
        for kind, text in posts:
            if kind == BAR:
                self._bar = text
                self.stream.write("\r\x1b[2K" + text)
            else:  # a line that stays: clear the bar, print the line, redraw nothing until the next bar
                self.stream.write(("\r\x1b[2K" if self._bar else "") + text + "\n")
                self._bar = ""
        if posts:
            self.stream.flush()

    def _run(self) -> None:
        import ray

        while not self._stop.wait(self.period):
            try:
                self._draw(ray.get(self._board.take.remote()))
            except Exception:  # the run is ending (Ray shutting down): the last posts are drained in __exit__
                return

    def __exit__(self, *exc) -> None:
        if self._board is None:
            return
        import ray

        self._stop.set()
        self._thread.join()
        try:
            self._draw(ray.get(self._board.take.remote()))
        finally:
            if self._bar:
                self.stream.write("\n")
                self.stream.flush()
            ray.kill(self._board)
            self._board = None  # closed: a second __exit__ (the run's ExitStack after fit) does nothing


def board_poster(name: str | None) -> Callable[[str, str], None] | None:
    """Worker side: ``post(kind, text)`` to the driver's board, or None when there is none."""
    if not name:
        return None
    import ray

    board = ray.get_actor(name)
    # waits for the board to hold the post (a round trip of about a millisecond, twice a second at most):
    # a post still in flight when the run ends would be lost with its line
    return lambda kind, text: ray.get(board.post.remote(kind, text))
