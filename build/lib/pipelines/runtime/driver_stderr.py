"""Ray's own false alarms written by the driver's native code, off the console unless --verbose.

When the driver runs a Ray Data pipeline itself (`vidpeft predict`, `vidpeft zeroshot`), its core
worker creates the actor pools, and Ray's C++ code logs its error-level false alarm about constructor
arguments (pipelines/runtime/ray_env.py: _KNOWN_FALSE_ALARMS) straight to the driver's file descriptor 2:
neither Python logging nor the filter on lines forwarded from workers sees it. While the body runs,
fd 2 is a pipe; a thread writes every line through to the real stderr as it arrives, except the
known false alarms. Ray's log files keep them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

from components.video.decoders.native_stderr import flush_python_streams


@contextlib.contextmanager
def dropping_lines(drop: Callable[[str], bool]) -> Iterator[None]:
    """Run the body with fd 2 piped through a filter: lines ``drop`` claims are not written, the rest
    are written at once, in order. Do not start long-lived child processes in the body (they would
    inherit the pipe)."""
    try:
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no fd 2 (a daemon): nothing to filter
        yield
        return

    def pump() -> None:
        pending = b""
        try:
            while chunk := os.read(read_end, 1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not drop(line.decode(errors="replace")))
                if kept:
                    os.write(saved, kept)
            if pending and not drop(pending.decode(errors="replace")):
                os.write(saved, pending)
        except OSError:
            pass
        finally:
            os.close(read_end)

    flush_python_streams()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=pump, name="vidpeft-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        flush_python_streams()
        os.dup2(saved, 2)  # the pipe's last write end closes: the thread writes what is left and ends
        thread.join(timeout=5)
        if not thread.is_alive():  # else a child process still holds the pipe: leave the thread its fd
            os.close(saved)


def quiet_driver_lines() -> contextlib.AbstractContextManager:
    """Ray's known false alarms from the driver's own native code dropped, unless --verbose."""
    from pipelines.runtime.ray_env import _false_alarm, verbose

    return contextlib.nullcontext() if verbose() else dropping_lines(_false_alarm)
