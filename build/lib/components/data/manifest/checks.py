"""Checking a manifest table: types coerced to the schema, then every row checked, vectorised.

Validation uses pyarrow.compute / numpy because manifests may hold ~100k rows; only the first
offending row is reported, by index, clip_id and column.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.manifest.schema import (
    CORE_COLUMNS,
    FEATURE_TYPE,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SPLITS,
    ManifestError,
)


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


class RowChecker:
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

    chk = RowChecker(table, path)
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
