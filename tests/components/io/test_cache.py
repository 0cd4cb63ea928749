"""The per-node cache of remote bytes: hits read no object, the size bound holds (least recently used
out first), entries are whole, and several processes share one folder safely."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from components.io import write_bytes
from components.io.cache import ByteCache
from tests.s3_server import moto_s3


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as server:
        for i in range(8):
            write_bytes(server.uri(f"c/{i}.bin"), bytes([i]) * 1000)
        yield server


def counting(fetch):
    calls = []

    def f(uri):
        calls.append(uri)
        return fetch(uri)
    return f, calls


def test_second_read_is_a_hit(s3, tmp_path):
    from components.io import read_bytes

    cache = ByteCache(str(tmp_path / "cache"), 10_000)
    fetch, calls = counting(read_bytes)
    assert cache.get(s3.uri("c/1.bin"), fetch) == bytes([1]) * 1000
    assert cache.get(s3.uri("c/1.bin"), fetch) == bytes([1]) * 1000
    assert calls == [s3.uri("c/1.bin")] and (cache.hits, cache.misses) == (1, 1)
    # another process's cache object on the same folder sees the entry
    assert ByteCache(str(tmp_path / "cache"), 10_000).get(s3.uri("c/1.bin"), fetch) and len(calls) == 1


def test_bound_holds_and_least_recently_used_go_first(s3, tmp_path):
    from components.io import read_bytes

    cache = ByteCache(str(tmp_path / "cache"), 3500)  # room for three entries of 1000 bytes
    for i in range(3):
        cache.get(s3.uri(f"c/{i}.bin"))
        time.sleep(0.01)  # distinct mtimes
    cache.get(s3.uri("c/0.bin"))  # 0 is now the most recently used
    time.sleep(0.01)
    cache.get(s3.uri("c/3.bin"))  # over the bound: evict down to 90 % -> 1 and 2 go (oldest first)
    kept = sum(size for _, size, _ in cache.entries())
    assert kept <= 3500 * 0.9
    fetch, calls = counting(read_bytes)
    cache.get(s3.uri("c/0.bin"), fetch)
    cache.get(s3.uri("c/3.bin"), fetch)
    assert calls == []  # the recently used ones stayed
    cache.get(s3.uri("c/1.bin"), fetch)
    assert calls == [s3.uri("c/1.bin")]  # the least recently used was evicted
    assert not [p for p in os.listdir(cache.root) if p.endswith(".tmp")]


def _worker(args):
    root, uris = args
    cache = ByteCache(root, 4000)
    return [len(cache.get(u)) for u in uris * 3]


def test_several_processes_share_one_folder(s3, tmp_path):
    root = str(tmp_path / "cache")
    uris = [s3.uri(f"c/{i}.bin") for i in range(8)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.map(_worker, [(root, uris[k:] + uris[:k]) for k in range(3)])
    assert all(all(n == 1000 for n in r) for r in results)  # every read whole, under concurrent eviction
    cache = ByteCache(root, 4000)
    assert sum(size for _, size, _ in cache.entries()) <= 4000
    for _, size, path in cache.entries():
        assert size == 1000 and len(set(open(path, "rb").read())) == 1  # no torn entry


def test_auto_is_the_default_a_node_folder_made_at_the_first_remote_read(s3, tmp_path, monkeypatch):
    """`data.cache_dir: auto` (the default, chosen from benchmarks/results/ingest_s3.json: cached epochs of
    per-object reads ran 1.43x local disk against 0.62x uncached) keeps a node's remote bytes in its temp
    dir, bounded by a quarter of that disk's free space; a run on local files leaves no folder behind."""
    import shutil

    from components.io.cache import auto_root, node_fetch, resolve
    from pipelines.config import DataConfig

    assert DataConfig().cache_dir == "auto"
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    fetch = node_fetch("auto", 50 * 10**9)
    assert not os.path.exists(auto_root())  # nothing made until a remote byte is read
    assert fetch(s3.uri("c/2.bin")) == bytes([2]) * 1000
    assert os.path.dirname(auto_root()) == str(tmp_path) and os.path.isdir(auto_root())
    folder, bound = resolve("auto", 50 * 10**9)
    assert bound <= shutil.disk_usage(folder).free * 0.25 + 1000 + 1  # never more than a quarter of free disk
    assert node_fetch("off", 10**9) is None and node_fetch("", 10**9) is None
