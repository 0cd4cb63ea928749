"""A per-node cache of remote bytes: a folder bounded in size, least recently used out first.

Several decoder processes on one node share the folder safely:
- an entry appears whole or not at all: written to a temporary name, then renamed into place;
- a hit touches the entry's mtime (the LRU clock; atime is often off with noatime mounts);
- eviction runs under an exclusive lock file (``.lock``, fcntl.flock), so two processes never evict
  the same bytes twice; the running total lives in ``.size`` beside it, rescanned when it says full.
  A reader that opened an entry just before it was evicted still reads it (POSIX keeps unlinked open
  files); one that finds it gone fetches it again.
Entries are keyed by URI: a dataset's objects are assumed immutable (write new keys for new bytes).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager

from components.io.fs import read_bytes

LOW_WATER = 0.9  # eviction brings the folder down to this share of max_bytes (not one entry at a time)


class ByteCache:
    def __init__(self, root: str, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"cache size must be positive, got {max_bytes} bytes")
        self.root, self.max_bytes = os.path.abspath(root), int(max_bytes)
        os.makedirs(self.root, exist_ok=True)
        self.hits = self.misses = self.evicted = 0

    def entry(self, uri: str) -> str:
        digest = hashlib.sha256(uri.encode()).hexdigest()
        return os.path.join(self.root, digest[:2], digest[2:])

    def get(self, uri: str, fetch: Callable[[str], bytes] = read_bytes) -> bytes:
        """The bytes of ``uri``: from the folder when present, else fetched and kept."""
        path = self.entry(uri)
        try:
            with open(path, "rb") as f:
                data = f.read()
            os.utime(path)
            self.hits += 1
            return data
        except FileNotFoundError:
            pass
        data = fetch(uri)
        self.misses += 1
        if len(data) <= self.max_bytes * LOW_WATER:
            self._put(path, data)
        return data

    def _put(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:  # a full or read-only disk: serve the bytes uncached
            if os.path.exists(tmp):
                os.unlink(tmp)
            return
        with self._locked():
            total = self._read_total() + len(data)
            if total > self.max_bytes:
                total = self._evict()
            self._write_total(total)

    @contextmanager
    def _locked(self):
        with open(os.path.join(self.root, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_total(self) -> int:
        try:
            with open(os.path.join(self.root, ".size")) as f:
                return int(f.read() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write_total(self, total: int) -> None:
        tmp = os.path.join(self.root, f".size.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(str(total))
        os.replace(tmp, os.path.join(self.root, ".size"))

    def entries(self) -> list[tuple[float, int, str]]:
        """(mtime, size, path) of every complete entry."""
        out = []
        for sub in os.scandir(self.root):
            if not sub.is_dir():
                continue
            for e in os.scandir(sub.path):
                if e.name.endswith(".tmp"):
                    continue
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                out.append((st.st_mtime, st.st_size, e.path))
        return out

    def _evict(self) -> int:
        """Under the lock: drop the least recently used entries down to LOW_WATER; the new total."""
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes * LOW_WATER:
                break
            try:
                os.unlink(path)
                self.evicted += 1
            except FileNotFoundError:
                pass
            total -= size
        return total


_caches: dict[tuple[str, int], ByteCache] = {}


def node_cache(root: str, max_bytes: int) -> ByteCache:
    """One ByteCache per folder and bound in this process."""
    key = (os.path.abspath(root), int(max_bytes))
    if key not in _caches:
        _caches[key] = ByteCache(*key)
    return _caches[key]


def node_fetch(root: str, max_bytes: int) -> Callable[[str], bytes] | None:
    """The fetch function decoders use for remote bytes: the node cache's when ``root`` is set, else None
    (a plain read)."""
    return node_cache(root, max_bytes).get if root else None
