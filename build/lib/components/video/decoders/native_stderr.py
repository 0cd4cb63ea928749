"""Drop a native library's own log lines from the process's stderr (file descriptor 2).

decord logs through dmlc's LOG(ERROR), straight to fd 2 with no level to turn down, before it raises
the same message as an exception ("video_reader.cc:83: ERROR opening: <path>, Invalid data ..."). The
exception already reaches the user as a VideoDecodeError naming the file, so the line is noise (one per
corrupt file per epoch). While a call runs, fd 2 points at a scratch file; afterwards every captured
line that ``drop`` does not claim is written back, so output of other threads is delayed, never lost.
Each call here lasts milliseconds, so a scratch file is cheaper than the pipe and thread that
pipelines/runtime/driver_stderr.py uses to stream the driver's stderr through a filter over a whole run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()  # one redirection at a time per process
_scratch: list = []  # the process's scratch file, made on first use


def _scratch_fd() -> int:
    if not _scratch:
        _scratch.append(tempfile.TemporaryFile())
    return _scratch[0].fileno()


def flush_python_streams() -> None:
    """Python's buffered stderr text out before fd 2 changes hands, so lines keep their order."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


@contextmanager
def dropping(drop: Callable[[str], bool]) -> Iterator[None]:
    """Run the body with fd 2 captured; write back the captured lines ``drop`` rejects."""
    with _LOCK:
        try:
            saved = os.dup(2)
            scratch = _scratch_fd()
        except OSError:  # no fd 2 (a daemon) or no temp dir: nothing to filter
            yield
            return
        flush_python_streams()
        os.ftruncate(scratch, 0)
        os.lseek(scratch, 0, os.SEEK_SET)
        os.dup2(scratch, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.lseek(scratch, 0, os.SEEK_SET)
            captured = b""
            while chunk := os.read(scratch, 1 << 16):
                captured += chunk
            kept = [line for line in captured.decode(errors="replace").splitlines(keepends=True) if not drop(line)]
            if kept:
                os.write(2, "".join(kept).encode())
