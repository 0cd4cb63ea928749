"""Packed datasets: a manifest's clips in tar shards (WebDataset layout), read a shard at a time.

``pack_manifest`` writes, below OUT:
  shards-<id>/shard-000000.tar ...  each clip is a sample with key ``<8-digit index>``: its video
      ``<key>.<ext>``, its metadata ``<key>.json`` (the manifest row without feature columns, plus the
      source video) and each feature it has ``<key>.<column>.npy``; clips cut from the same video share
      its bytes (stored once per shard, under the first such clip's key; the others' JSON names it);
  manifest.parquet  the manifest with ``video_path`` = the shard (relative to OUT) and the columns
      ``member`` (the video's member name), ``member_offset`` / ``member_size`` (its bytes in the tar)
      and ``source_path`` (where the video came from).
A shard is written to its final name only in a fresh ``shards-<id>`` folder; the manifest, written last,
commits the pack. A local pack is built in a temporary folder renamed into place; a failed pack deletes
the shards it wrote, so nothing partial is left behind (a killed one leaves only unreferenced shards).

``ShardReader`` serves member bytes: it fetches a whole shard once (one GET, or the node cache) and keeps
the last one, so rows grouped by shard cost one request per shard.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from components.data.manifest import read_manifest, write_manifest
from components.io import StorageError, basename, fs, is_remote, join, local_path, uri

PACKED_COLUMNS = ("member", "member_offset", "member_size", "source_path")
BLOCK = tarfile.BLOCKSIZE  # 512


def is_packed(table: pa.Table) -> bool:
    return all(c in table.column_names for c in PACKED_COLUMNS[:3])


def parse_size(text: str) -> int:
    """'512MB', '1.5GB', '200k', '1048576' -> bytes (decimal units; KiB/MiB/GiB binary)."""
    t = text.strip().upper().replace(" ", "")
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "K": 10**3, "M": 10**6, "G": 10**9, "B": 1}
    for unit, factor in units.items():
        if t.endswith(unit):
            t, mult = t[: -len(unit)], factor
            break
    else:
        mult = 1
    try:
        value = float(t) * mult
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 512MB, 2GB)") from None
    if value < BLOCK * 4:
        raise ValueError(f"shard size {text!r} is too small")
    return int(value)


class _TarWriter:
    """A tar file written member by member (ustar headers), knowing each member's data offset."""

    def __init__(self, out) -> None:
        self.out, self.pos = out, 0

    def add(self, name: str, data: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        header = info.tobuf(format=tarfile.USTAR_FORMAT)
        self.out.write(header)
        offset = self.pos + len(header)
        self.out.write(data)
        pad = -len(data) % BLOCK
        if pad:
            self.out.write(b"\0" * pad)
        self.pos = offset + len(data) + pad
        return offset

    def close(self) -> None:
        self.out.write(b"\0" * (2 * BLOCK))
        self.out.close()


@dataclass
class PackReport:
    manifest: str
    shards: int
    clips: int
    videos: int
    bytes: int


def _npy(values: list[float]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.float32))
    return buf.getvalue()


def pack_manifest(manifest: str, out: str, shard_bytes: int = 512 * 10**6,
                  progress: Callable[[int, int], None] | None = None) -> PackReport:
    """Pack every clip of ``manifest`` into tar shards below ``out`` (a folder or bucket prefix)."""
    m = read_manifest(manifest, check_files=False)
    table = m.table
    if is_packed(table):
        raise ValueError(f"{manifest} is already packed")
    features = list(m.feature_dims)
    out = uri.absolute(out).rstrip("/")
    name = f"shards-{uuid.uuid4().hex[:8]}"
    remote = is_remote(out)
    build = join(out + "/", name) if remote else os.path.join(local_path(out), f".{name}.tmp")
    written: list[str] = []
    rows = table.to_pylist()
    members, offsets, sizes, shard_of = [""] * len(rows), [0] * len(rows), [0] * len(rows), [""] * len(rows)
    total = 0
    writer = None
    try:
        shard, stored = "", {}
        for i, row in enumerate(rows):
            src = row["video_path"]
            if src not in stored:
                data = fs.read_bytes(src)
                if writer is not None and writer.pos + len(data) > shard_bytes and writer.pos > 0:
                    writer.close()
                    writer = None
                if writer is None:
                    shard = f"shard-{len(written):06d}.tar"
                    target = join(build + "/", shard)
                    written.append(target)
                    writer, stored = _TarWriter(_open_output(target)), {}
                key = f"{i:08d}"
                member = f"{key}{os.path.splitext(basename(src))[1].lower() or '.mp4'}"
                stored[src] = (member, writer.add(member, data), len(data))
                total += len(data)
            key = f"{i:08d}"
            members[i], offsets[i], sizes[i] = stored[src]
            shard_of[i] = f"{name}/{shard}"
            meta = {k: v for k, v in row.items() if k not in features}
            meta.update(source_path=src, video_member=members[i])
            writer.add(f"{key}.json", json.dumps(meta).encode())
            for col in features:
                if row[col] is not None:
                    writer.add(f"{key}.{col}.npy", _npy(row[col]))
            if progress and (i + 1) % 100 == 0:
                progress(i + 1, len(rows))
        if writer is not None:
            writer.close()
        if not remote:
            os.replace(build, os.path.join(local_path(out), name))
        packed = table.set_column(table.schema.get_field_index("video_path"), "video_path",
                                  pa.array(shard_of, pa.string()))
        for col, values, typ in (("member", members, pa.string()), ("member_offset", offsets, pa.int64()),
                                 ("member_size", sizes, pa.int64()),
                                 ("source_path", [r["video_path"] for r in rows], pa.string())):
            packed = packed.append_column(col, pa.array(values, typ))
        target = join(out + "/", "manifest.parquet")
        write_manifest(target, packed, m.class_names, feature_dims=m.feature_dims, regression_names=m.regression_names,
                       feature_tokens=m.extra_metadata.get("feature_tokens"))
    except BaseException:
        if writer is not None:  # closed here (an object store's upload ends), then deleted
            writer.out.close()
        _remove(written, build, remote)
        raise
    return PackReport(target, len(written), len(rows), len({r["video_path"] for r in rows}), total)


def _open_output(target: str):
    if is_remote(target):
        fsys, path = fs.filesystem(target)
        try:
            return fsys.open_output_stream(path)
        except OSError as e:
            raise fs.classify(target, e) from None
    os.makedirs(os.path.dirname(local_path(target)), exist_ok=True)
    return open(local_path(target), "wb")


def _remove(written: list[str], build: str, remote: bool) -> None:
    """Best effort: the shards of a failed pack."""
    import shutil

    if not remote:
        shutil.rmtree(local_path(build), ignore_errors=True)
        return
    for target in written:
        try:
            fs.delete(target)
        except StorageError:
            pass


class ShardReader:
    """Member bytes of packed shards. ``fetch(uri) -> bytes`` reads a whole shard (a plain read, or the
    node cache's); the last shard stays in memory, so a run of rows from one shard costs one fetch."""

    def __init__(self, fetch: Callable[[str], bytes] | None = None) -> None:
        self.fetch = fetch or fs.read_bytes
        self.shard, self.data = "", b""
        self.fetches = 0

    def member(self, shard: str, offset: int, size: int) -> bytes:
        if not is_remote(shard):  # a local shard: read just the member
            with open(local_path(shard), "rb") as f:
                f.seek(offset)
                data = f.read(size)
        else:
            if shard != self.shard:
                self.shard, self.data = "", b""  # never keep two shards in memory
                self.data, self.shard = self.fetch(shard), shard
                self.fetches += 1
            data = self.data[offset:offset + size]
        if len(data) != size:
            raise StorageError(f"{shard}", f"truncated shard: member at {offset} wants {size} bytes, "
                                           f"{len(data)} there", "pack the dataset again")
        return data
