"""Clip manifest contract: one Parquet row per clip, validated on write and on load.

Schema (see `CORE_COLUMNS` / `OPTIONAL_COLUMNS`):
  clip_id str (required, unique) | video_path str (required; absolute or relative to
  the manifest's directory) | start_frame,end_frame int64? | start_sec,end_sec float64? |
  split str (required, train/val/test) | dataset str (required) | label int64? |
  multi_label list<int64>? (optional column) | regression list<float32>? (optional column) |
  feature columns list<float32>? (any name, declared in metadata `feature_dims`; a column listed
  in `feature_tokens` holds M tokens of D = feature_dims[col] floats, flattened token-major).
Schema metadata key `vidpeft` holds JSON {"version": 1, "class_names": [...],
"num_classes": K, "feature_dims": {...}, "feature_tokens": {...}?, "regression_names": [...]?}.

Validation is vectorised (pyarrow.compute / numpy) because manifests may hold ~100k rows;
only the first offending row is reported, by index, clip_id and column.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

METADATA_KEY = b"vidpeft"
MANIFEST_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Always present after write/read (nullable ones are filled with nulls when absent).
CORE_COLUMNS: dict[str, pa.DataType] = {
    "clip_id": pa.string(),
    "video_path": pa.string(),
    "start_frame": pa.int64(),
    "end_frame": pa.int64(),
    "start_sec": pa.float64(),
    "end_sec": pa.float64(),
    "split": pa.string(),
    "dataset": pa.string(),
    "label": pa.int64(),
}
REQUIRED_COLUMNS: tuple[str, ...] = ("clip_id", "video_path", "split", "dataset")
# Present only when the task needs them.
OPTIONAL_COLUMNS: dict[str, pa.DataType] = {
    "multi_label": pa.list_(pa.int64()),
    "regression": pa.list_(pa.float32()),
}
FEATURE_TYPE = pa.list_(pa.float32())


class ManifestError(ValueError):
    """Invalid manifest; the message names the manifest path, row index, clip_id and column."""

    def __init__(self, path: str | os.PathLike, reason: str, row: int | None = None,
                 column: str | None = None, clip_id: str | None = None) -> None:
        self.path, self.reason, self.row, self.column, self.clip_id = (
            str(path), reason, row, column, clip_id)
        where = [str(path)]
        if row is not None:
            where.append(f"row {row}" + (f" (clip_id={clip_id!r})" if clip_id is not None else ""))
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(", ".join(where) + ": " + reason)

    def __reduce__(self) -> tuple:  # keep picklable across Ray workers despite custom __init__
        return (type(self), (self.path, self.reason, self.row, self.column, self.clip_id))


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; `table.video_path` is absolute."""

    table: pa.Table
    class_names: list[str]
    num_classes: int
    feature_dims: dict[str, int]
    path: Path
    regression_names: list[str] | None = None
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def feature_columns(self) -> list[str]:
        return list(self.feature_dims)

    def split(self, name: str) -> pa.Table:
        if name not in SPLITS:
            raise ValueError(f"{self.path}: unknown split {name!r}; expected one of {SPLITS}")
        return self.table.filter(pc.equal(self.table["split"], name))

    def summary(self) -> dict[str, Any]:
        counts = self.table.group_by(["split", "dataset"]).aggregate([("clip_id", "count")])
        by_split: dict[str, int] = {}
        by_dataset: dict[str, int] = {}
        by_split_dataset: dict[str, dict[str, int]] = {}
        for split, ds, n in zip(counts["split"].to_pylist(), counts["dataset"].to_pylist(),
                                counts["clip_id_count"].to_pylist()):
            by_split[split] = by_split.get(split, 0) + n
            by_dataset[ds] = by_dataset.get(ds, 0) + n
            by_split_dataset.setdefault(split, {})[ds] = n
        return {
            "path": str(self.path),
            "rows": self.table.num_rows,
            "num_classes": self.num_classes,
            "splits": dict(sorted(by_split.items())),
            "datasets": dict(sorted(by_dataset.items())),
            "split_dataset": {k: dict(sorted(v.items()))
                              for k, v in sorted(by_split_dataset.items())},
            "labelled": self.table.num_rows - self.table["label"].null_count,
            "feature_dims": dict(self.feature_dims),
        }


# ---------------------------------------------------------------- type coercion

def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Accept lossless-enough variants (int32 for int64, large_string, float64 features...)."""
    if pa.types.is_null(actual):
        return True  # an all-null column: fine for nullable columns, nulls are checked separately
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(actual) or pa.types.is_integer(actual)
    if pa.types.is_list(expected):
        if not (pa.types.is_list(actual) or pa.types.is_large_list(actual)):
            return False
        return _compatible(actual.value_type, expected.value_type)
    return actual.equals(expected)


def _coerce(table: pa.Table, name: str, expected: pa.DataType, path: str) -> pa.Table:
    col = table[name]
    if col.type.equals(expected):
        return table
    if not _compatible(col.type, expected):
        raise ManifestError(path, f"wrong type {col.type}, expected {expected}", column=name)
    try:
        cast = col.cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ManifestError(path, f"cannot cast {col.type} to {expected}: {e}", column=name) from e
    return table.set_column(table.schema.get_field_index(name), name, cast)


# ---------------------------------------------------------------- row checks

def _first_true(mask: pa.ChunkedArray | pa.Array | np.ndarray) -> int | None:
    """Index of the first True (nulls count as False), or None."""
    arr = mask if isinstance(mask, np.ndarray) else pc.fill_null(mask, False).to_numpy(
        zero_copy_only=False)
    hits = np.flatnonzero(arr)
    return int(hits[0]) if hits.size else None


class _Checker:
    """Holds table + path so every failure can name row, clip_id and column."""

    def __init__(self, table: pa.Table, path: str) -> None:
        self.table, self.path = table, path

    def fail(self, reason: str, row: int | None = None, column: str | None = None) -> None:
        clip_id = None
        if row is not None and "clip_id" in self.table.column_names:
            clip_id = self.table["clip_id"][row].as_py()
        raise ManifestError(self.path, reason, row=row, column=column, clip_id=clip_id)

    def check_mask(self, mask: Any, column: str, reason: str) -> None:
        row = _first_true(mask)
        if row is not None:
            self.fail(reason, row, column)

    def no_nulls(self, column: str) -> None:
        col = self.table[column]
        if col.null_count:
            self.check_mask(pc.is_null(col), column, "null in required column")

    def list_lengths(self, column: str, dim: int) -> None:
        lengths = pc.list_value_length(self.table[column])  # null rows -> null length
        self.check_mask(pc.not_equal(lengths, dim), column,
                        f"vector length differs from declared dim {dim}")

    def list_values(self, column: str, bad: Any, reason: str) -> None:
        """`bad(values) -> bool mask` over the flattened list values; report the owning row."""
        col = self.table[column].combine_chunks()
        values = pc.list_flatten(col)
        if len(values) == 0:
            return
        flat_bad = bad(values)
        idx = _first_true(flat_bad)
        if idx is None:
            return
        # Map a flattened position back to its row via the list offsets (null rows are empty).
        parents = pc.list_parent_indices(col).to_numpy()
        self.fail(reason, int(parents[idx]), column)

    def ordered_range(self, lo: str, hi: str) -> None:
        a, b = self.table[lo], self.table[hi]
        self.check_mask(pc.less(a, 0), lo, "negative start")
        self.check_mask(pc.less_equal(b, a), hi, f"{hi} <= {lo} (empty range)")


def validate_table(table: pa.Table, meta: Mapping[str, Any], path: str | os.PathLike,
                   required_columns: Iterable[str] = (),
                   feature_columns: Iterable[str] = ()) -> pa.Table:
    """Validate and coerce a manifest table against its metadata; returns the coerced table.

    `required_columns`: extra columns that must exist and be non-null in every row (e.g. "label").
    `feature_columns`: feature columns that must exist and be declared in `feature_dims`
    (nulls allowed: a null feature means the modality is missing for that clip).
    """
    path = str(path)
    num_classes = int(meta["num_classes"])
    feature_dims: dict[str, int] = dict(meta.get("feature_dims") or {})
    regression_names = meta.get("regression_names")

    for name in REQUIRED_COLUMNS:
        if name not in table.column_names:
            raise ManifestError(path, "missing required column", column=name)
    # Fill absent nullable core columns so downstream code can rely on them.
    for name, typ in CORE_COLUMNS.items():
        if name not in table.column_names:
            table = table.append_column(pa.field(name, typ), pa.nulls(table.num_rows, typ))
    for name in list(required_columns) + list(feature_columns):
        if name not in table.column_names:
            raise ManifestError(path, "missing required column", column=name)
    for name in feature_columns:
        if name not in feature_dims:
            raise ManifestError(path, "feature column not declared in metadata feature_dims",
                                column=name)
    for name in feature_dims:
        if name not in table.column_names:
            raise ManifestError(path, "feature column declared in metadata but absent", column=name)
        if name in CORE_COLUMNS or name in OPTIONAL_COLUMNS:
            raise ManifestError(path, "feature column name clashes with a reserved column",
                                column=name)

    typed = {**CORE_COLUMNS,
             **{k: v for k, v in OPTIONAL_COLUMNS.items() if k in table.column_names},
             **{k: FEATURE_TYPE for k in feature_dims}}
    for name, typ in typed.items():
        table = _coerce(table, name, typ, path)

    chk = _Checker(table, path)
    for name in (*REQUIRED_COLUMNS, *required_columns):
        chk.no_nulls(name)

    ids = table["clip_id"]
    if pc.count_distinct(ids).as_py() != table.num_rows:
        seen: dict[str, int] = {}
        for i, cid in enumerate(ids.to_pylist()):
            if cid in seen:
                chk.fail(f"duplicate clip_id (first seen at row {seen[cid]})", i, "clip_id")
            seen[cid] = i
    chk.check_mask(pc.equal(pc.utf8_length(ids), 0), "clip_id", "empty clip_id")
    chk.check_mask(pc.equal(pc.utf8_length(table["video_path"]), 0), "video_path",
                   "empty video_path")
    chk.check_mask(pc.invert(pc.is_in(table["split"], value_set=pa.array(SPLITS))), "split",
                   f"unknown split value; expected one of {SPLITS}")

    label = table["label"]
    chk.check_mask(pc.or_(pc.less(label, 0), pc.greater_equal(label, num_classes)), "label",
                   f"label out of range [0, {num_classes})")
    if "multi_label" in table.column_names:
        chk.list_values("multi_label", pc.is_null, "null class index inside list")
        chk.list_values("multi_label",
                        lambda v: pc.or_(pc.less(v, 0), pc.greater_equal(v, num_classes)),
                        f"class index out of range [0, {num_classes})")
    if "regression" in table.column_names:
        chk.list_values("regression", lambda v: pc.invert(pc.is_finite(v)),
                        "null or non-finite regression target")
        if regression_names:
            chk.list_lengths("regression", len(regression_names))

    chk.ordered_range("start_frame", "end_frame")
    chk.ordered_range("start_sec", "end_sec")

    tokens = dict(meta.get("feature_tokens") or {})
    for name, dim in feature_dims.items():
        chk.list_lengths(name, int(dim) * int(tokens.get(name, 1)))  # M tokens of D, stored flat
        chk.list_values(name, lambda v: pc.invert(pc.is_finite(v)), "null or non-finite feature")
    return table


# ---------------------------------------------------------------- metadata

def _parse_metadata(schema: pa.Schema, path: str) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ManifestError(path, f"missing Parquet schema metadata key {METADATA_KEY.decode()!r}")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ManifestError(path, f"metadata {METADATA_KEY.decode()!r} is not valid JSON: "
                                  f"{e}") from e
    return _check_metadata(meta, path)


def _check_metadata(meta: dict[str, Any], path: str) -> dict[str, Any]:
    if meta.get("version") != MANIFEST_VERSION:
        raise ManifestError(path, f"unsupported manifest version {meta.get('version')!r}, "
                                  f"expected {MANIFEST_VERSION}")
    names = meta.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ManifestError(path, "metadata class_names must be a list of strings")
    if meta.get("num_classes") != len(names):
        raise ManifestError(path, f"metadata num_classes={meta.get('num_classes')!r} "
                                  f"but {len(names)} class_names")
    dims = meta.get("feature_dims") or {}
    if not isinstance(dims, dict) or not all(isinstance(v, int) and v > 0 for v in dims.values()):
        raise ManifestError(path, "metadata feature_dims must map column -> positive int")
    tokens = meta.get("feature_tokens") or {}
    if not isinstance(tokens, dict) or not all(isinstance(v, int) and v > 0 and k in dims for k, v in tokens.items()):
        raise ManifestError(path, "metadata feature_tokens must map a feature_dims column -> positive int")
    reg = meta.get("regression_names")
    if reg is not None and not (isinstance(reg, list) and all(isinstance(n, str) for n in reg)):
        raise ManifestError(path, "metadata regression_names must be a list of strings")
    return meta


# ---------------------------------------------------------------- write / read

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
                   feature_tokens: Mapping[str, int] | None = None) -> Path:
    """Validate and atomically write a manifest (tmp file in the same dir, then os.replace).

    `feature_tokens`: columns holding a sequence of M tokens per clip (e.g. audio frames) rather
    than one vector; each row then holds M * D floats, token-major, with D = feature_dims[col].

    `feature_dims=None` infers features from extra list<float> columns. Video files are not
    checked here (they may be written later or live elsewhere); `read_manifest` checks them.
    """
    path = Path(path)
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
    _check_metadata(meta, spath)
    table = _ordered(validate_table(table, meta, spath))
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _resolve_paths(col: pa.ChunkedArray, base: Path) -> pa.Array:
    base_s = str(base)
    return pa.array([p if os.path.isabs(p) else os.path.normpath(os.path.join(base_s, p))
                     for p in col.to_pylist()], type=pa.string())


def read_manifest(path: str | os.PathLike, check_files: bool = True,
                  required_columns: Iterable[str] = (),
                  feature_columns: Iterable[str] = ()) -> Manifest:
    """Load and validate a manifest; `video_path` is resolved against the manifest's directory."""
    path = Path(path).absolute()
    spath = str(path)
    if not path.is_file():
        raise ManifestError(spath, "manifest file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(spath, f"not a readable Parquet file: {e}") from e
    meta = _parse_metadata(table.schema, spath)
    table = _ordered(validate_table(table, meta, spath, required_columns, feature_columns))

    idx = table.schema.get_field_index("video_path")
    table = table.set_column(idx, "video_path", _resolve_paths(table["video_path"], path.parent))
    if check_files:
        chk = _Checker(table, spath)
        paths = table["video_path"].to_pylist()
        exists = {p: os.path.isfile(p) for p in dict.fromkeys(paths)}  # stat each file once
        chk.check_mask(np.array([not exists[p] for p in paths], dtype=bool), "video_path",
                       "video file not found")
    extra = {k: v for k, v in meta.items() if k not in
             ("version", "class_names", "num_classes", "feature_dims", "regression_names")}
    return Manifest(table=table, class_names=list(meta["class_names"]),
                    num_classes=int(meta["num_classes"]),
                    feature_dims={k: int(v) for k, v in (meta.get("feature_dims") or {}).items()},
                    path=path, regression_names=meta.get("regression_names"),
                    extra_metadata=extra)
