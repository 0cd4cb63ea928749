"""Side-modality features (audio / optical-flow / transcript embeddings) joined to manifest clips.

A source is a Parquet file or a folder of `.npy` files, matched to clips by clip id or by the
video's file stem, and becomes the manifest column `feat_<name>` (list<float32>, null where the
clip has no feature: the ingest turns nulls into a mask for the model).

Two shapes:
  per clip      one vector per key. Parquet: columns `id_column`, `value_column`; .npy: `<key>.npy`
                of shape (D,), or (N, D) which is averaged over N.
  time-aligned  a sequence per video, averaged over each clip's [start, end) in seconds.
                Parquet: one row per step with `id_column`, `time_column` (seconds, the step's
                time) and `value_column`; .npy: `<key>.npy` of shape (N, D) with row i covering
                [i / rate, (i + 1) / rate). A clip shorter than one step takes the step nearest
                its middle. Clips given in frames are mapped to seconds with the video's fps.
A vector with a non-finite value counts as missing (the manifest rejects NaN features).

Per-row files (``path_column``): the annotation table itself names each clip's `.npy` file in a
column (`prepare csv --feature NAME=COLUMN`); the converter resolves the paths into ``files``
(clip id -> path) and the file is read as above (per clip, or as a sequence windowed by the clip).

Tokens (``tokens`` = M > 1): keep a sequence of M vectors per clip instead of one mean, for
cross-attention adapters that attend over a modality's tokens. Time-aligned sources are averaged
over M equal bins of the clip's [start, end) (a bin with no step takes the clip's mean); per-clip
(N, D) .npy files over M contiguous row bins (N >= M). Stored flat (M * D floats, token-major) and
declared in the manifest metadata ``feature_tokens``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import ConfigError
from components.data.manifest import FEATURE_TYPE, METADATA_KEY, rebase_video_paths, write_manifest
from components.io import StorageError
from components.io import fs as storage
from components.io import uri


class FeatureError(ConfigError):
    """A feature source is unusable; the message names the file and the key."""


@dataclass(frozen=True)
class FeatureSource:
    name: str  # column feat_<name>
    path: str  # Parquet file or folder of .npy files
    key: Literal["auto", "clip_id", "video"] = "auto"  # auto: video when time-aligned, else clip_id
    time_aligned: bool = False
    rate: float = 1.0  # .npy time-aligned: rows per second
    id_column: str = "id"
    value_column: str = "feature"
    time_column: str = "time"
    tokens: int = 1  # M > 1: a sequence of M vectors per clip (bins of its time range / rows)
    path_column: str = ""  # annotation column naming each clip's own .npy file (instead of `path`)
    files: Mapping[str, str] | None = None  # clip id -> .npy path, filled from path_column

    @property
    def where(self) -> str:
        return f"column {self.path_column!r}" if self.path_column else self.path

    @property
    def column(self) -> str:
        return f"feat_{self.name}"

    @property
    def key_kind(self) -> str:
        if self.path_column:
            return "clip_id"  # the row names the file: its own clip
        return ("video" if self.time_aligned else "clip_id") if self.key == "auto" else self.key


@dataclass(frozen=True)
class FeatureStats:
    column: str
    dim: int
    present: int
    missing: int
    invalid: int  # had a vector, but with NaN/inf


class _Store:
    """Key -> per-clip vector, or key -> (times (N,), values (N, D)) when time-aligned."""

    def __init__(self, src: FeatureSource) -> None:
        self.src, self.path = src, uri.absolute(src.path)  # a local path or an s3:// / gs:// / https:// URI
        self.dim: int | None = None
        self._rows: dict[str, object] = {}
        self._remote_npy: set[str] | None = None  # a remote .npy folder: its files, listed once
        if src.tokens < 1:
            raise FeatureError(f"feature source {src.name!r}: tokens must be >= 1, got {src.tokens}")
        if src.path_column:  # a path per clip, from a column of the annotations
            if src.files is None:
                raise FeatureError(f"feature source {src.name!r}: column {src.path_column!r} was not read "
                                   f"from the annotations")
            self.kind = "files"
            return
        try:
            if storage.is_dir(self.path):
                self.kind = "npy"
                if uri.is_remote(self.path):
                    self._remote_npy = set(storage.list_files(self.path, (".npy",)))
            elif storage.exists(self.path):
                self.kind = "parquet"
                self._load_parquet()
            else:
                raise FeatureError(f"feature source {src.name!r}: {self.path} not found")
        except StorageError as e:
            raise FeatureError(f"feature source {src.name!r}: {e}") from None

    def _check_dim(self, d: int, key: str) -> None:
        if self.dim is None:
            self.dim = d
        elif d != self.dim:
            raise FeatureError(f"{self.path}: key {key!r} has dim {d}, others have {self.dim}")

    def _load_parquet(self) -> None:
        s = self.src
        cols = [s.id_column, s.value_column] + ([s.time_column] if s.time_aligned else [])
        try:
            t = pq.read_table(pa.BufferReader(storage.read_bytes(self.path)), columns=cols)
        except StorageError as e:
            raise FeatureError(str(e)) from None
        except (pa.ArrowInvalid, KeyError, OSError) as e:
            raise FeatureError(f"{self.path}: cannot read columns {cols}: {e}") from None
        ids = [str(k) for k in t[s.id_column].to_pylist()]
        values = t[s.value_column].to_pylist()
        if not s.time_aligned:
            if s.tokens > 1:
                raise FeatureError(f"{self.path}: per-clip Parquet features are one vector per clip; tokens "
                                   f"need a time-aligned source or (N, D) .npy files")
            for k, v in zip(ids, values):
                if k in self._rows:
                    raise FeatureError(f"{self.path}: key {k!r} appears twice (per-clip features need "
                                       f"one row per key; set time_aligned for sequences)")
                if v is not None:
                    self._check_dim(len(v), k)
                    self._rows[k] = np.asarray(v, dtype=np.float32)
            return
        times = t[s.time_column].to_numpy(zero_copy_only=False).astype(np.float64)
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(ids):
            if values[i] is not None:
                groups.setdefault(k, []).append(i)
        for k, idx in groups.items():
            for i in idx:
                self._check_dim(len(values[i]), k)
            order = sorted(idx, key=lambda i: times[i])
            self._rows[k] = (times[order], np.asarray([values[i] for i in order], dtype=np.float32))

    def get(self, key: str):
        if self.kind == "parquet":
            return self._rows.get(key)
        if self.kind == "files":
            if key not in self.src.files:
                return None
            f = source = str(self.src.files[key])
            if not os.path.isfile(f):
                raise FeatureError(f"feature {self.src.name!r}, clip {key!r}: {f} (from column "
                                   f"{self.src.path_column!r}) not found")
        else:
            f = uri.join(self.path, f"{key}.npy")
            if self._remote_npy is not None:
                if f not in self._remote_npy:
                    return None
                try:
                    data = storage.read_bytes(f)
                except StorageError as e:
                    raise FeatureError(str(e)) from None
                source = io.BytesIO(data)
            elif not os.path.isfile(f):
                return None
            else:
                source = f
        try:
            arr = np.load(source, mmap_mode="r" if source is f else None)  # a local file: only the rows needed
        except (ValueError, OSError) as e:
            raise FeatureError(f"{f}: not a readable .npy file: {e}") from None
        if self.src.time_aligned:
            if arr.ndim != 2:
                raise FeatureError(f"{f}: time-aligned features need shape (N, D), got {arr.shape}")
            self._check_dim(arr.shape[1], key)
            times = (np.arange(arr.shape[0]) + 0.5) / self.src.rate  # step centres
            return times, arr
        if arr.ndim not in (1, 2):
            raise FeatureError(f"{f}: expected shape (D,) or (N, D), got {arr.shape}")
        if self.src.tokens > 1:
            if arr.ndim != 2 or arr.shape[0] < self.src.tokens:
                raise FeatureError(f"{f}: {self.src.tokens} tokens need shape (N >= {self.src.tokens}, D), got {arr.shape}")
            self._check_dim(arr.shape[1], key)
            return np.stack([np.asarray(b, dtype=np.float32).mean(axis=0)
                             for b in np.array_split(np.asarray(arr), self.src.tokens)])  # (M, D)
        vec = np.asarray(arr if arr.ndim == 1 else arr.mean(axis=0), dtype=np.float32)
        self._check_dim(vec.shape[0], key)
        return vec


def window_mean(times: np.ndarray, values: np.ndarray, start: float | None,
                end: float | None) -> np.ndarray | None:
    """Mean of the rows whose time is in [start, end) (all rows when both are None); for a
    window between two steps, the row nearest the window's middle if it is within one step."""
    if len(times) == 0:
        return None
    if start is None and end is None:
        return np.asarray(values, dtype=np.float32).mean(axis=0)
    lo = -np.inf if start is None else start
    hi = np.inf if end is None else end
    inside = np.flatnonzero((times >= lo) & (times < hi))
    if inside.size:
        return np.asarray(values[inside[0]:inside[-1] + 1], dtype=np.float32).mean(axis=0)
    step = float(np.median(np.diff(times))) if len(times) > 1 else np.inf
    mid = (max(lo, times[0]) + min(hi, times[-1])) / 2
    nearest = int(np.argmin(np.abs(times - mid)))
    if abs(times[nearest] - mid) <= step:
        return np.asarray(values[nearest], dtype=np.float32)
    return None


def binned_means(times: np.ndarray, values: np.ndarray, start: float | None, end: float | None,
                 tokens: int) -> np.ndarray | None:
    """``window_mean`` of the clip, or (tokens, D) means over equal bins of [start, end); a bin with
    no step of its own takes the clip's mean. A clip without both ends uses the sequence's span."""
    whole = window_mean(times, values, start, end)
    if tokens <= 1 or whole is None:
        return whole
    lo = times[0] if start is None else start
    hi = times[-1] + 1e-9 if end is None else end
    edges = np.linspace(lo, hi, tokens + 1)
    bins = [window_mean(times, values, a, b) for a, b in zip(edges[:-1], edges[1:])]
    return np.stack([whole if b is None else b for b in bins])


def _seconds(table: pa.Table, base: str | None) -> tuple[list, list]:
    """Per-row (start_sec, end_sec), converting frame ranges with each video's fps."""
    cols = {c: table[c].to_pylist() if c in table.column_names else [None] * table.num_rows
            for c in ("start_sec", "end_sec", "start_frame", "end_frame", "video_path")}
    fps_cache: dict[str, float] = {}
    starts, ends = list(cols["start_sec"]), list(cols["end_sec"])
    for i in range(table.num_rows):
        sf, ef = cols["start_frame"][i], cols["end_frame"][i]
        if sf is None and ef is None:
            continue
        path = cols["video_path"][i]
        if base is not None:
            path = uri.join(base, path)
        if path not in fps_cache:
            from components.video.decode import VideoDecodeError, probe_video  # lazy: decoders

            try:
                fps_cache[path] = probe_video(path, fallback="pyav")[1]
            except VideoDecodeError as e:
                raise FeatureError(f"row {i}: clip given in frames, and its fps is unknown: {e}") from None
        fps = fps_cache[path]
        starts[i] = None if sf is None else sf / fps
        ends[i] = None if ef is None else ef / fps
    return starts, ends


def attach_features(table: pa.Table, sources: Sequence[FeatureSource],
                    base: str | os.PathLike | None = None) -> tuple[pa.Table, list[FeatureStats]]:
    """Add one `feat_<name>` column per source; `base` resolves relative video paths (only needed
    to read the fps of frame-ranged clips for time-aligned sources)."""
    stats = []
    clip_ids = [str(c) for c in table["clip_id"].to_pylist()]
    stems = [os.path.splitext(uri.basename(p))[0] for p in table["video_path"].to_pylist()]
    ranges = None
    for src in sources:
        if src.column in table.column_names:
            raise FeatureError(f"column {src.column} already exists in the manifest")
        store = _Store(src)
        keys = stems if src.key_kind == "video" else clip_ids
        if src.time_aligned and ranges is None:
            ranges = _seconds(table, str(base) if base else None)
        out: list[list[float] | None] = []
        invalid = 0
        for i, k in enumerate(keys):
            got = store.get(k)
            if got is not None and src.time_aligned:
                got = binned_means(got[0], got[1], ranges[0][i], ranges[1][i], src.tokens)
            if got is not None and not np.all(np.isfinite(got)):
                invalid += 1
                got = None
            out.append(None if got is None else np.asarray(got, dtype=np.float32).reshape(-1).tolist())
        present = sum(v is not None for v in out)
        if present == 0:
            raise FeatureError(f"feature source {src.name!r} ({src.where}) matched no clip by "
                               f"{src.key_kind}; e.g. key {keys[0]!r}" if keys else "empty manifest")
        table = table.append_column(pa.field(src.column, FEATURE_TYPE), pa.array(out, type=FEATURE_TYPE))
        stats.append(FeatureStats(src.column, int(store.dim or 0), present, len(out) - present, invalid))
    return table, stats


def add_features(manifest: str | os.PathLike, sources: Sequence[FeatureSource],
                 out: str | os.PathLike | None = None) -> list[FeatureStats]:
    """Attach features to a manifest file (in place, or written to `out`), keeping its metadata."""
    manifest = uri.absolute(manifest)
    try:
        table = pq.read_table(pa.BufferReader(storage.read_bytes(manifest)))
    except StorageError as e:
        raise FeatureError(str(e)) from None
    meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    if "class_names" not in meta:
        raise FeatureError(f"{manifest}: not a vidpeft manifest (no {METADATA_KEY.decode()!r} metadata)")
    table, stats = attach_features(table, sources, base=uri.dirname(manifest))
    target = uri.absolute(out or manifest)
    table = rebase_video_paths(table, manifest, target)
    dims = {**meta.get("feature_dims", {}), **{s.column: s.dim for s in stats}}
    tokens = {**meta.get("feature_tokens", {}), **{s.column: s.tokens for s in sources if s.tokens > 1}}
    write_manifest(target, table, meta["class_names"], feature_dims=dims,
                   regression_names=meta.get("regression_names"), feature_tokens=tokens)
    return stats
