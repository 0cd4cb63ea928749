"""Scan every video of a manifest in parallel and report the unusable ones.

Per video (once, however many clips use it): exists, non-empty, readable, opens with the decoder
(or its fallback, which the status then names),
and (unless `quick`) decodes its first, middle and last frame, which catches files truncated
after a valid header. Per clip: its time/frame range lies inside the video. Work is spread over
a process pool (spawned, so it is safe in a process that already runs Ray); each check opens and
releases its own reader, so no decoder lives longer than one file.

Report: JSON (counts per dataset + one entry per bad video/clip) and CSV (path, reason, clips,
datasets). `clean` writes a copy of the manifest without the bad clips.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.data.manifest import METADATA_KEY, read_manifest, rebase_video_paths, write_manifest
from components.io import StorageError, is_remote, local_path, read_bytes, uri


@dataclass(frozen=True)
class VideoStatus:
    path: str
    ok: bool
    reason: str = ""
    frames: int = 0
    fps: float = 0.0
    fallback: bool = False  # readable by the fallback decoder only


@dataclass(frozen=True)
class Decoders:
    decoder: str = "decord"
    fallback: str = "pyav"  # "" = none


def check_video(path: str, quick: bool = False, decoders: Decoders = Decoders(),
                data: bytes | None = None) -> VideoStatus:
    """One file's status; never raises for a bad file (the reason says what is wrong). ``data``: the
    video's bytes when the caller has them (a packed dataset's member)."""
    from components.video.decode import ClipSpec, VideoDecodeError, decode_clip, probe_video

    if data is not None:
        pass
    elif is_remote(path):  # fetched once, decoded in memory for the probe and the frames
        try:
            data = read_bytes(path)
        except StorageError as e:
            return VideoStatus(path, False, e.reason)
        if not data:
            return VideoStatus(path, False, "empty (zero-byte) object")
    else:
        bad = _local_problem(local_path(path))
        if bad:
            return VideoStatus(path, False, bad)
    used: list[VideoDecodeError] = []  # the first decoder's errors when the fallback read the file
    kw = {"decoder": decoders.decoder, "fallback": decoders.fallback or None, "on_fallback": used.append,
          "data": data}
    try:
        n, fps, _, _ = probe_video(path, **kw)
        if n < 1:
            return VideoStatus(path, False, "no frames")
        if not quick:
            probe = np.unique(np.array([0, n // 2, n - 1]))
            decode_clip(path, ClipSpec(num_frames=len(probe), size=64), indices_fn=lambda s, e: probe, **kw)
    except VideoDecodeError as e:
        return VideoStatus(path, False, e.reason)
    return VideoStatus(path, True, frames=n, fps=fps, fallback=bool(used))


def _local_problem(path: str) -> str:
    """What makes a local file unusable before any decoder tries it ("" = nothing)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot stat file: {e.strerror or e}"
    if st.st_size == 0:
        return "empty (zero-byte) file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return ""


def _check_many(args: tuple[list[str], bool, Decoders]) -> list[VideoStatus]:
    paths, quick, decoders = args
    return [check_video(p, quick, decoders) for p in paths]


def _check_shard(args: tuple[str, list[tuple[str, int, int]], bool, Decoders]) -> list[VideoStatus]:
    """The members of one shard of a packed dataset: the shard is fetched once."""
    from components.data.packed import ShardReader

    shard, members, quick, decoders = args
    reader, out = ShardReader(), []
    for name, offset, size in members:
        try:
            data = reader.member(shard, offset, size)
        except (StorageError, OSError) as e:
            out.append(VideoStatus(name, False, getattr(e, "reason", None) or str(e)))
            continue
        out.append(check_video(name, quick, decoders, data=data) if data else VideoStatus(name, False, "empty member"))
    return out


def scan_packed(members: dict[str, tuple[str, int, int]], workers: int = 0, quick: bool = False,
                decoders: Decoders = Decoders()) -> dict[str, VideoStatus]:
    """Status of every member (name -> (shard, offset, size)), a shard per task."""
    by_shard: dict[str, list[tuple[str, int, int]]] = {}
    for name, (shard, offset, size) in members.items():
        by_shard.setdefault(shard, []).append((name, offset, size))
    tasks = [(shard, items, quick, decoders) for shard, items in by_shard.items()]
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        results = [_check_shard(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_check_shard, tasks))
    return {st.path: st for result in results for st in result}


def scan(paths: list[str], workers: int = 0, quick: bool = False,
         progress: Callable[[int, int], None] | None = None, decoders: Decoders = Decoders()) -> dict[str, VideoStatus]:
    """Status of every path, checked by `workers` processes (0 = one per CPU; 1 = in process)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < 2:
        out = {}
        for i, p in enumerate(paths):
            out[p] = check_video(p, quick, decoders)
            if progress and (i + 1) % 100 == 0:
                progress(i + 1, len(paths))
        return out
    # Small chunks keep the pool busy when file sizes (decode cost) differ a lot.
    size = max(1, min(32, len(paths) // (workers * 4) or 1))
    chunks = [(paths[i:i + size], quick, decoders) for i in range(0, len(paths), size)]
    out, done = {}, 0
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for result in pool.map(_check_many, chunks):
            for status in result:
                out[status.path] = status
            done += len(result)
            if progress:
                progress(done, len(paths))
    return out


@dataclass
class CheckReport:
    manifest: str
    videos: int
    bad_videos: int
    clips: int
    bad_clips: int
    fallback_videos: int  # readable by the fallback decoder only
    by_dataset: dict[str, dict[str, int]]
    bad: list[dict]  # {"path", "reason", "clips", "clip_ids", "datasets"}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def check_manifest(manifest: str | os.PathLike, workers: int = 0, quick: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   decoders: Decoders = Decoders()) -> tuple[CheckReport, set[str]]:
    """(report, ids of the bad clips) for every clip of the manifest."""
    from components.video.decode import resolve_range

    from components.data.packed import is_packed

    m = read_manifest(manifest, check_files=False)
    t = m.table
    packed = is_packed(t)
    rows = t.select(["clip_id", "video_path", "dataset", "start_frame", "end_frame", "start_sec", "end_sec",
                     *(["member", "member_offset", "member_size"] if packed else [])]).to_pylist()
    if packed:  # a video is a shard member: "<shard>#<member>"
        members = {}
        for r in rows:
            shard = r["video_path"]
            r["video_path"] = f"{shard}#{r['member']}"
            members[r["video_path"]] = (shard, r["member_offset"], r["member_size"])
        paths = list(members)
        status = scan_packed(members, workers, quick, decoders)
    else:
        paths = list(dict.fromkeys(r["video_path"] for r in rows))
        status = scan(paths, workers, quick, progress, decoders)

    bad_ids: set[str] = set()
    bad: dict[tuple[str, str], dict] = {}
    by_dataset: dict[str, dict[str, int]] = {}
    counted: set[tuple[str, str]] = set()
    for r in rows:
        st, ds = status[r["video_path"]], r["dataset"]
        d = by_dataset.setdefault(ds, {"videos": 0, "bad_videos": 0, "clips": 0, "bad_clips": 0})
        d["clips"] += 1
        if (ds, st.path) not in counted:
            counted.add((ds, st.path))
            d["videos"] += 1
            d["bad_videos"] += not st.ok
        reason = st.reason
        if st.ok:
            try:
                resolve_range(st.frames, st.fps, r["start_frame"], r["end_frame"], r["start_sec"], r["end_sec"])
                continue
            except ValueError as e:
                reason = f"clip range outside the video: {e}"
        d["bad_clips"] += 1
        bad_ids.add(r["clip_id"])
        entry = bad.setdefault((st.path, reason), {"path": st.path, "reason": reason, "clips": 0,
                                                   "clip_ids": [], "datasets": []})
        entry["clips"] += 1
        if len(entry["clip_ids"]) < 20:  # enough to find them; the count has the rest
            entry["clip_ids"].append(r["clip_id"])
        if ds not in entry["datasets"]:
            entry["datasets"].append(ds)
    report = CheckReport(str(m.path), len(paths), sum(not s.ok for s in status.values()), len(rows),
                         len(bad_ids), sum(s.fallback for s in status.values()), dict(sorted(by_dataset.items())),
                         list(bad.values()))
    return report, bad_ids


def write_reports(report: CheckReport, json_path: str | os.PathLike, csv_path: str | os.PathLike | None) -> None:
    Path(json_path).write_text(report.to_json())
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "reason", "clips", "datasets"])
            for b in report.bad:
                w.writerow([b["path"], b["reason"], b["clips"], ";".join(b["datasets"])])


def write_clean_manifest(manifest: str | os.PathLike, bad_ids: set[str], out: str | os.PathLike) -> int:
    """A copy of the manifest without the bad clips (metadata kept); returns the rows written."""
    manifest, out = uri.absolute(manifest), uri.absolute(out)
    table = pq.read_table(pa.BufferReader(read_bytes(manifest)))
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    keep = pc.invert(pc.is_in(table["clip_id"], value_set=pa.array(sorted(bad_ids), pa.string())))
    table = rebase_video_paths(table.filter(keep), manifest, out)
    write_manifest(out, table, meta["class_names"], feature_dims=meta.get("feature_dims") or {},
                   regression_names=meta.get("regression_names"))
    return table.num_rows
