"""A checksum per checkpoint file, recorded in state.json and checked before a checkpoint is chosen.

Sizes catch a copy cut short; a file of the right size with wrong bytes (bit rot, a bad copy on
shared storage) needs its content checked. ``state["sha256"]`` maps file name -> hex digest; a
checkpoint whose files do not match is passed over for the previous complete one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def digest_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_stream(stream) -> str:
    h = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def file_digests(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: digest_file(directory / name) for name in names}


def checkpoint_intact(fs, checkpoint_path: str, state: dict) -> bool:
    """Every file listed in ``state["sha256"]`` has that digest (``fs``: a pyarrow filesystem).
    A state.json without digests (older checkpoints) passes: sizes are all it can be checked by."""
    for name, expected in (state.get("sha256") or {}).items():
        try:
            with fs.open_input_stream(f"{checkpoint_path.rstrip('/')}/{name}") as f:
                if digest_stream(f) != expected:
                    return False
        except OSError:
            return False
    return True
