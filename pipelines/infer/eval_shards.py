"""`vidpeft evaluate --workers N`: the split cut into N shards, one evaluation worker each (a Ray task
with its own decoder actors), results combined exactly; and `--save-scores FILE`, per-video scores.

Each worker returns its metric accumulator, per-video scores and targets and the split's rows they
belong to (the decoder carries each row's index through, as decoder actors may finish out of order). The
driver merges the accumulators (sums, and every score for mAP) and computes the metrics once, so N
workers give the metrics of one (up to float summation order in the loss).

Scores file (Parquet, one row per readable video, in manifest order): ``clip_id``, ``label`` (the
class index; a list for multi-label and regression targets), ``scores`` (list<float32>: the view-averaged
probabilities, softmax / sigmoid, or regression values, one per output), ``pred`` (argmax, single-label);
metadata ``vidpeft.scores`` = {output_names, task, views, model, manifest, split}. Ensembling two
models = averaging their ``scores`` by ``clip_id``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.data.manifest.io import write_parquet_atomic

SCORES_KEY = b"vidpeft.scores"


def shards(table: pa.Table, workers: int) -> list[pa.Table]:
    """``table`` with an ``eval_row`` column (its row index), cut into at most ``workers`` contiguous,
    nearly equal slices (no empty one)."""
    from pipelines.data.ingest import EVAL_ROW

    table = table.append_column(EVAL_ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    bounds = np.linspace(0, table.num_rows, min(workers, table.num_rows) + 1).round().astype(int)
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def combine(parts: list[dict], names=None) -> dict:
    """The workers' results as one: accumulators merged, then metrics; scores, targets and rows (of the
    split) in manifest order; counts summed."""
    acc = parts[0]["acc"]
    for p in parts[1:]:
        acc.merge(p["acc"])
    rows = np.concatenate([p["rows"] for p in parts])
    order = np.argsort(rows, kind="stable")
    scores = np.concatenate([p["scores"] for p in parts])[order]
    targets = np.concatenate([p["targets"] for p in parts])[order]
    return {"metrics": acc.compute(names) if acc.count else {}, "scores": scores, "targets": targets,
            "rows": rows[order], "skipped": sum(p["skipped"] for p in parts),
            "clips": sum(p["clips"] for p in parts), "fallback": sum(p["fallback"] for p in parts)}


def write_scores(path: str | os.PathLike, clip_ids: list[str], targets: np.ndarray, scores: np.ndarray,
                 task: str, meta: dict) -> Path:
    """The per-video scores file (see the module doc), written atomically."""
    cols = {"clip_id": pa.array([str(c) for c in clip_ids], pa.string())}
    if task == "single_label":
        cols["label"] = pa.array(np.asarray(targets, dtype=np.int64))
    else:
        cols["label"] = pa.array([np.asarray(t, dtype=np.float32).ravel().tolist() for t in targets],
                                 pa.list_(pa.float32()))
    cols["scores"] = pa.array([row.tolist() for row in np.asarray(scores, dtype=np.float32)], pa.list_(pa.float32()))
    if task == "single_label":
        cols["pred"] = pa.array(np.asarray(scores).argmax(axis=1).astype(np.int64) if len(scores) else [], pa.int64())
    table = pa.table(cols).replace_schema_metadata({SCORES_KEY: json.dumps({**meta, "task": task}).encode()})
    return write_parquet_atomic(table, path)
