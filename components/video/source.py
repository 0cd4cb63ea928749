"""Where a decoder reads a video from: a local file by its path, or a remote object's bytes in memory.

decord and PyAV both open file-like objects, so a video in s3://, gs:// or https:// is fetched once per
clip (through ``fetch``: the per-node cache when one is set, components/io/cache.py) and decoded from
memory, with no temporary file. A remote video that cannot be fetched (gone mid-run, access denied,
truncated) raises VideoDecodeError like a corrupt file, so the ingest skips and counts its clip.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from components.io import StorageError, is_remote, local_path, read_bytes
from components.video.errors import VideoDecodeError, check_file

Fetch = Callable[[str], bytes]


def video_bytes(path: str, fetch: Fetch | None = None) -> bytes | None:
    """None for a local file (checked: present, not empty), else the remote object's bytes."""
    if not is_remote(path):
        check_file(local_path(path))
        return None
    try:
        data = (fetch or read_bytes)(path)
    except StorageError as e:
        raise VideoDecodeError(path, e.reason + (f" ({e.hint})" if e.hint else "")) from None
    if not data:
        raise VideoDecodeError(path, "empty (zero-byte) object")
    return data


def opened(path: str, data: bytes | None):
    """What to hand a decoder's open call: the bytes as a file object, else the local path."""
    return io.BytesIO(data) if data is not None else local_path(path)
