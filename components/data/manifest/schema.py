"""The manifest's schema: its columns and types, its metadata (read and checked), its error and its result type.

Metadata: the Parquet schema key ``vidpeft`` holds JSON {"version": 1, "class_names": [...],
"num_classes": K, "feature_dims": {...}, "feature_tokens": {...}?, "regression_names": [...]?}.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

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
    path: Path | str  # a str for a manifest in an object store (s3://, gs://, https://)
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


def parse_metadata(schema: pa.Schema, path: str) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ManifestError(path, f"missing Parquet schema metadata key {METADATA_KEY.decode()!r}")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ManifestError(path, f"metadata {METADATA_KEY.decode()!r} is not valid JSON: "
                                  f"{e}") from e
    return check_metadata(meta, path)


def check_metadata(meta: dict[str, Any], path: str) -> dict[str, Any]:
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
