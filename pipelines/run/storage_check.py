"""The run's checkpoint storage (scaling.storage_path in s3:// or gs://) is checked before Ray starts:
an unreachable endpoint, refused credentials or a missing bucket is one line naming the URI, not a
Ray Train failure after the workers have started."""

from __future__ import annotations

import os

from components.config import ConfigError
from components.io import StorageError, delete, is_remote, write_bytes

PROBE = ".vidpeft-write-check"


def check_storage(storage: str) -> None:
    """Write and delete a small object below ``storage`` (local folders are made by Ray as needed)."""
    if not is_remote(storage):
        return
    probe = f"{storage.rstrip('/')}/{PROBE}-{os.getpid()}"
    try:
        write_bytes(probe, b"ok")
        delete(probe)
    except StorageError as e:
        raise ConfigError(f"scaling.storage_path: cannot write checkpoints there: {e}") from None
