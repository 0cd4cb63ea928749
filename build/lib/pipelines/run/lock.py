"""One run per output directory: an exclusive lock file in OUTPUT_DIR for the whole run.

Two runs writing one OUTPUT_DIR overwrite each other's config.yaml, run_info.json, weights and
metrics, so a second run is refused with the holder's pid, host and start time. The lock is an
``flock`` on ``OUTPUT_DIR/.vidpeft.lock``: the kernel drops it when its process dies however it dies,
so a lock left by a killed run is taken over (and said so). The file is never deleted, only emptied,
so two waiting runs can never each lock a different inode.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from components.config import ConfigError

LOCK_NAME = ".vidpeft.lock"


class RunLockedError(ConfigError):
    """OUTPUT_DIR is in use by another live run."""


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}"


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def hold_run_lock(out: str | Path, command: str = "train"):
    """Hold OUTPUT_DIR's lock for the duration of the block; RunLockedError when another run holds it."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(f"{out} is in use by another run ({_describe(_read(fd))}; lock {path}): wait for it "
                                 f"to end, or choose another output_dir") from None
        previous = _read(fd)
        if previous.get("pid"):  # written by a run that ended without releasing: it died
            print(f"[vidpeft] taking over the lock on {out} left by a run that is gone ({_describe(previous)})",
                  file=sys.stderr, flush=True)
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released cleanly: nothing to take over next time
    finally:
        os.close(fd)  # closing drops the flock
        _remove_if_untouched(out, created)


def _remove_if_untouched(out: Path, created: bool) -> None:
    """A run refused before it wrote anything (a bad config) leaves no output dir behind."""
    try:
        if created and {p.name for p in out.iterdir()} <= {LOCK_NAME}:
            (out / LOCK_NAME).unlink(missing_ok=True)
            out.rmdir()
    except OSError:  # another run got in meanwhile: its directory stays
        pass
