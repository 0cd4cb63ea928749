"""Writing a manifest (validated, atomically replaced) and reading one back (validated, paths resolved)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.data.manifest.checks import RowChecker, validate_table
from components.io import StorageError
from components.io import fs as storage
from components.io import uri
from components.io.uri import READ_ONLY_SCHEMES
from components.data.manifest.schema import (
    CORE_COLUMNS,
    FEATURE_TYPE,
    MANIFEST_VERSION,
    METADATA_KEY,
    OPTIONAL_COLUMNS,
    Manifest,
    ManifestError,
    check_metadata,
    parse_metadata,
)


def _rows_to_table(rows: Sequence[Mapping[str, Any]], feature_dims: Mapping[str, int] | None,
                   path: str) -> pa.Table:
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [r.get(name) for r in rows]
        typ = CORE_COLUMNS.get(name) or OPTIONAL_COLUMNS.get(name)
        if typ is None and feature_dims and name in feature_dims:
            typ = FEATURE_TYPE
        try:
            columns[name] = pa.array(values, type=typ)  # typ None -> inferred (extra columns)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ManifestError(path, f"cannot convert values to {typ}: {e}", column=name) from e
    return pa.table(columns) if columns else pa.table({n: pa.array([], t)
                                                       for n, t in CORE_COLUMNS.items()})


def _infer_feature_dims(table: pa.Table) -> dict[str, int]:
    """Extra list<float> columns are side-modality features; dim = first non-null length."""
    dims: dict[str, int] = {}
    for name in table.column_names:
        typ = table.schema.field(name).type
        if name in CORE_COLUMNS or name in OPTIONAL_COLUMNS:
            continue
        if (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and pa.types.is_floating(
                typ.value_type):
            lengths = pc.drop_null(pc.list_value_length(table[name]))
            if len(lengths):
                dims[name] = int(lengths[0].as_py())
    return dims


def _ordered(table: pa.Table) -> pa.Table:
    core = [c for c in CORE_COLUMNS if c in table.column_names]
    opt = [c for c in OPTIONAL_COLUMNS if c in table.column_names]
    rest = [c for c in table.column_names if c not in CORE_COLUMNS and c not in OPTIONAL_COLUMNS]
    return table.select(core + opt + rest)


def write_manifest(path: str | os.PathLike, rows_or_table: pa.Table | Sequence[Mapping[str, Any]],
                   class_names: Sequence[str], feature_dims: Mapping[str, int] | None = None,
                   regression_names: Sequence[str] | None = None,
                   feature_tokens: Mapping[str, int] | None = None) -> Path | str:
    """Validate and atomically write a manifest (tmp file in the same dir, then os.replace; an
    s3:// or gs:// URI is written in one PUT).

    `feature_tokens`: columns holding a sequence of M tokens per clip (e.g. audio frames) rather
    than one vector; each row then holds M * D floats, token-major, with D = feature_dims[col].

    `feature_dims=None` infers features from extra list<float> columns. Video files are not
    checked here (they may be written later or live elsewhere); `read_manifest` checks them.
    """
    remote = uri.is_remote(path)
    path = path if remote else Path(uri.local_path(path))
    spath = str(path)
    table = (rows_or_table if isinstance(rows_or_table, pa.Table)
             else _rows_to_table(list(rows_or_table), feature_dims, spath))
    table = table.replace_schema_metadata(None)
    dims = dict(feature_dims) if feature_dims is not None else _infer_feature_dims(table)
    meta: dict[str, Any] = {"version": MANIFEST_VERSION,
                            "class_names": [str(c) for c in class_names],
                            "num_classes": len(class_names),
                            "feature_dims": {k: int(v) for k, v in dims.items()}}
    if regression_names is not None:
        meta["regression_names"] = [str(n) for n in regression_names]
    if feature_tokens:
        meta["feature_tokens"] = {k: int(v) for k, v in feature_tokens.items() if int(v) != 1}
    check_metadata(meta, spath)
    table = _ordered(validate_table(table, meta, spath))
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})

    if remote:  # one PUT: the object appears whole or not at all
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        storage.write_bytes(spath, sink.getvalue().to_pybytes())
        return spath
    return write_parquet_atomic(table, path)


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` through a temporary file in the same folder (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        storage.as_new_file(tmp)  # not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def rebase_video_paths(table: pa.Table, manifest: str, out: str) -> pa.Table:
    """A manifest table read from ``manifest`` and written to ``out``: relative video paths are made
    absolute when ``out`` is in another folder, so they stay valid."""
    if uri.dirname(uri.absolute(out)) == uri.dirname(uri.absolute(manifest)):
        return table
    return table.set_column(table.schema.get_field_index("video_path"), "video_path",
                            _resolve_paths(table["video_path"], uri.dirname(uri.absolute(manifest))))


def _resolve_paths(col: pa.ChunkedArray, base: str) -> pa.Array:
    """Relative video paths against the manifest's folder (a local folder or a bucket prefix)."""
    return pa.array([uri.join(base, p) for p in col.to_pylist()], type=pa.string())


def _present(paths: list[str]) -> dict[str, bool]:
    """Whether each video is there: a stat per local file; one listing per bucket prefix the remote
    videos share (LIST returns a thousand keys per request; a HEAD per video would be a request each)."""
    out = {p: os.path.isfile(uri.local_path(p)) for p in paths if not uri.is_remote(p)}
    stores: dict[tuple[str, str], list[str]] = {}  # (scheme, bucket) -> its videos
    for p in paths:
        if uri.is_remote(p):
            stores.setdefault((uri.scheme(p), p.split("://", 1)[1].split("/", 1)[0]), []).append(p)
    for (head, _), remote in stores.items():
        if head in READ_ONLY_SCHEMES:  # no listing over http(s): a HEAD each
            out.update({p: storage.exists(p) for p in remote})
            continue
        prefix = os.path.commonpath([uri.dirname(p).split("://", 1)[1] for p in remote])
        listed = set(storage.list_files(f"{head}://{prefix}"))
        out.update({p: p in listed for p in remote})
    return out


def _read_table(spath: str) -> pa.Table:
    if not uri.is_remote(spath) and not os.path.isfile(uri.local_path(spath)):
        raise ManifestError(spath, "manifest file not found")
    try:
        data = storage.read_bytes(spath)  # one GET for a remote manifest
    except StorageError as e:
        if e.missing:
            raise ManifestError(spath, "manifest file not found") from None
        raise ManifestError(spath, e.reason + (f" ({e.hint})" if e.hint else "")) from None
    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(spath, f"not a readable Parquet file: {e}") from e


def read_manifest(path: str | os.PathLike, check_files: bool = True,
                  required_columns: Iterable[str] = (),
                  feature_columns: Iterable[str] = ()) -> Manifest:
    """Load and validate a manifest (a local file or an s3:// / gs:// / https:// URI); `video_path` is
    resolved against the manifest's folder or bucket prefix."""
    spath = uri.absolute(path)
    table = _read_table(spath)
    meta = parse_metadata(table.schema, spath)
    table = _ordered(validate_table(table, meta, spath, required_columns, feature_columns))

    idx = table.schema.get_field_index("video_path")
    table = table.set_column(idx, "video_path", _resolve_paths(table["video_path"], uri.dirname(spath)))
    if check_files:
        chk = RowChecker(table, spath)
        paths = table["video_path"].to_pylist()
        try:
            exists = _present(list(dict.fromkeys(paths)))  # each file once
        except StorageError as e:
            raise ManifestError(spath, f"cannot check its videos: {e}") from None
        chk.check_mask(np.array([not exists[p] for p in paths], dtype=bool), "video_path",
                       "video file not found")
    extra = {k: v for k, v in meta.items() if k not in
             ("version", "class_names", "num_classes", "feature_dims", "regression_names")}
    return Manifest(table=table, class_names=list(meta["class_names"]),
                    num_classes=int(meta["num_classes"]),
                    feature_dims={k: int(v) for k, v in (meta.get("feature_dims") or {}).items()},
                    path=spath if uri.is_remote(spath) else Path(spath), regression_names=meta.get("regression_names"),
                    extra_metadata=extra)
