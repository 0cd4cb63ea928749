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
import shutil
import tempfile
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
        return node_cache_size(self.root)

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


AUTO, OFF = "auto", ("", "off")
AUTO_SHARE_OF_FREE = 0.25  # "auto" never takes more than this share of the temp disk's free space


def auto_root() -> str:
    """The node's own cache folder for ``cache_dir: auto``: in its temp dir, one per user."""
    return os.path.join(tempfile.gettempdir(), f"vidpeft-cache-{os.getuid()}")


def resolve(root: str, max_bytes: int) -> tuple[str, int] | None:
    """(folder, bound) of a ``data.cache_dir`` value on this node, None for no cache. ``auto`` is resolved
    where the decoder runs (each node's temp dir) and is bounded by a quarter of that disk's free space too,
    so a default cache never fills a node's disk."""
    if root.strip().lower() in OFF:
        return None
    if root.strip().lower() == AUTO:
        folder = auto_root()
        os.makedirs(folder, exist_ok=True)
        free = shutil.disk_usage(folder).free
        used = node_cache_size(folder)
        return folder, max(1, min(int(max_bytes), int((free + used) * AUTO_SHARE_OF_FREE)))
    return root, int(max_bytes)


def node_cache_size(folder: str) -> int:
    try:
        with open(os.path.join(folder, ".size")) as f:
            return int(f.read() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def node_fetch(root: str, max_bytes: int) -> Callable[[str], bytes] | None:
    """The fetch function decoders use for remote bytes: the node cache's when ``root`` names one (a
    folder, or ``auto``), else None (a plain read). The folder is made at the first remote read, so a
    dataset on local disk leaves nothing behind."""
    if root.strip().lower() in OFF:
        return None
    cache: list[ByteCache] = []

    def fetch(uri: str) -> bytes:
        if not cache:
            folder, bound = resolve(root, max_bytes)
            cache.append(node_cache(folder, bound))
        return cache[0].get(uri)

    return fetch
