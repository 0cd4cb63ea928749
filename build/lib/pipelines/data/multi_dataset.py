"""Several manifests in one run (``data.datasets``): shared adapters, one head per dataset, a mixing ratio.

The driver reads and validates every manifest (errors name the dataset's key, its name and the file),
fills ``model.heads`` (kind ``multi_dataset``, components/multihead/) and builds one combined
manifest that the single-manifest ingest then streams unchanged:

- clips keep their video and range; ``dataset`` becomes the config's name (so two manifests both
  called "synthetic_motion" stay apart), ``clip_id`` becomes ``<name>/<clip_id>``;
- the target is packed into one float32 (W,) column, W = the widest head (the heads' Task,
  components/tasks/heads.py, says why and how, and decodes it); ``dataset_index`` (the decoder's
  per-dataset column) routes each clip to its head;
- rows labelled ``data.train_split`` are one epoch's mix: dataset i contributes
  ``mix_counts``' share of the epoch (weight_i / sum of weights, rounded so the counts add up),
  every clip ``count // size`` times plus a seeded draw without replacement for the remainder (so a
  dataset smaller than its share is sampled with replacement, a larger one is subsampled);
- rows labelled ``data.val_split`` are every dataset's own validation split, unmixed.

The draw is made once per run (seeded by ``seed`` and the dataset's name): Ray Train iterates the
same dataset every epoch, so a subsampled dataset shows the same subset each epoch (raise its weight
or ``data.mix_epoch_clips`` to show more of it). ``data.limit`` cuts the combined splits, which are
ordered so that the cut keeps the mix (train: shuffled) and every dataset (val: interleaved).
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.config import ConfigError
from components.data.manifest import SPLITS, FEATURE_TYPE, Manifest, ManifestError, read_manifest
from components.model import MODEL_KINDS, model_kind
from components.model_config import with_kind
from components.multihead.config import DatasetHeadConfig
from components.tasks import Heads, make_task
from pipelines.config import DatasetEntry, ExperimentConfig
from pipelines.data.ingest import RANGE_COLUMNS

TARGET_NAMES_KEY = "dataset_target_names"  # Manifest.extra_metadata key: regression names per dataset


def mix_counts(sizes: list[int], weights: list[float], total: int) -> list[int]:
    """Clips per dataset in an epoch of ``total``: proportional to ``weights`` (largest remainder, so
    the counts sum to ``total`` exactly, which plain rounding does not guarantee)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")  # ties: the earlier dataset
    counts[order[: total - int(counts.sum())]] += 1
    return [int(c) for c in counts]


def draw_indices(size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` row indices of a table of ``size``: each row ``count // size`` times, the remainder
    drawn without replacement (less variance than independent draws with replacement, same mean)."""
    full = np.tile(np.arange(size), count // size)
    rest = rng.choice(size, count % size, replace=False)
    return np.concatenate([full, np.sort(rest)]).astype(np.int64)


def _fail(where: str, reason: str) -> ConfigError:
    return ConfigError(f"{where}: {reason}")


def _width(entry: DatasetEntry, manifest: Manifest, train: pa.Table, where: str) -> int:
    if entry.num_outputs:
        return entry.num_outputs
    try:
        return make_task(entry.task).outputs_from_manifest(manifest, train)
    except ValueError as e:
        raise _fail(where, str(e)) from None


def _pack(heads: Heads, head: int, table: pa.Table, where: str) -> np.ndarray:
    """(rows, packed width) float32 targets of one dataset's rows; errors name the clip."""
    try:
        return heads.pack(head, table[heads.tasks[head].column].combine_chunks(), table["clip_id"])
    except ValueError as e:
        raise _fail(where, str(e)) from None


def _combined_rows(table: pa.Table, name: str, split: str, packed: np.ndarray, features: dict[str, int]) -> pa.Table:
    """One dataset's rows in the combined manifest's columns."""
    n, width = packed.shape
    columns = {
        "clip_id": pc.binary_join_element_wise(pa.scalar(name), table["clip_id"], "/"),
        "video_path": table["video_path"],
        **{c: table[c] for c in RANGE_COLUMNS},
        "split": pa.array([split] * n, pa.string()),
        "dataset": pa.array([name] * n, pa.string()),
        "label": pa.nulls(n, pa.int64()),
        Heads.column: pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)),
                                               pa.array(packed.reshape(-1), pa.float32())),
    }
    for column in features:  # a manifest without a modality: null = missing for its clips (masked)
        present = column in table.column_names
        columns[column] = table[column].cast(FEATURE_TYPE) if present else pa.nulls(n, FEATURE_TYPE)
    return pa.table(columns)


def _interleaved(parts: list[pa.Table]) -> pa.Table:
    """Rows of ``parts`` alternating (first of each, second of each, ...), so any prefix holds them all."""
    combined = pa.concat_tables(parts)
    rank = np.concatenate([np.arange(len(p)) for p in parts])
    part = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
    return combined.take(pa.array(np.lexsort((part, rank))))


def _check_splits(cfg: ExperimentConfig) -> None:
    d = cfg.data
    if d.train_split not in SPLITS:
        raise ConfigError(f"data.train_split: {d.train_split!r} is not one of {SPLITS}")
    if d.val_split and d.val_split not in SPLITS:
        raise ConfigError(f"data.val_split: {d.val_split!r} is not one of {SPLITS}")
    if d.val_split == d.train_split:
        raise ConfigError("data.val_split: must differ from data.train_split with data.datasets "
                          "(choose each dataset's splits with data.datasets.N.train_split / val_split)")
    for i, e in enumerate(d.datasets):
        if e.train_split and e.train_split not in SPLITS:
            raise ConfigError(f"data.datasets.{i}.train_split: {e.train_split!r} is not one of {SPLITS}")
        if e.val_split and e.val_split not in (*SPLITS, "none"):
            raise ConfigError(f"data.datasets.{i}.val_split: {e.val_split!r} is not one of {SPLITS} or none")
        if not d.val_split and e.val_split not in ("", "none"):
            raise ConfigError(f"data.datasets.{i}.val_split: {e.val_split!r}, but data.val_split is empty "
                              f"(no validation in this run)")


def prepare_multi_dataset(cfg: ExperimentConfig) -> tuple[ExperimentConfig, Manifest]:
    """Validate ``data.datasets``, fill ``model.heads`` and return the combined manifest (module docstring)."""
    d = cfg.data
    if not d.datasets:
        raise ConfigError(f"model.kind={cfg.model.kind} / model.heads: a multi-dataset model needs data.datasets")
    if not model_kind(cfg.model.kind).with_datasets:
        able = sorted(n for n, k in MODEL_KINDS.items() if k.with_datasets)
        raise ConfigError(f"model.kind: {cfg.model.kind!r} has a single head; data.datasets needs "
                          f"{' or '.join(able)}")
    if d.eval_clips * d.eval_crops > 1:
        raise ConfigError("data.eval_clips / data.eval_crops: multi-view evaluation is not supported with "
                          "data.datasets (its score averaging follows one task)")
    _check_splits(cfg)

    # 1) every manifest, validated; errors name the dataset's key and the file
    loaded = []
    for i, e in enumerate(d.datasets):
        where = f"data.datasets.{i} ({e.name})"
        try:
            m = read_manifest(e.manifest, check_files=d.check_files, required_columns=[make_task(e.task).column])
        except ManifestError as err:
            raise _fail(where, str(err)) from None
        train_split = e.train_split or d.train_split
        val_split = None if (e.val_split == "none" or not d.val_split) else (e.val_split or d.val_split)
        train = m.split(train_split)
        val = m.split(val_split) if val_split else None
        for split, table in ((train_split, train), (val_split, val)):
            if table is not None and table.num_rows == 0:
                raise _fail(where, f"split {split!r} of {m.path} has no rows")
        loaded.append((e, m, train, val, where))
    if d.val_split and all(val is None for _, _, _, val, _ in loaded):
        raise ConfigError("data.datasets: no dataset is evaluated (every val_split is none); "
                          "set data.val_split= (empty) to train without validation")

    # 2) heads and side modalities
    heads = [DatasetHeadConfig(e.name, e.task, _width(e, m, train, where)) for e, m, train, _, where in loaded]
    packing = Heads.from_configs(heads)
    packed_width = packing.num_outputs
    modalities = []
    for k, mod in enumerate(cfg.model.modalities):
        dims = {e.name: m.feature_dims[mod.column] for e, m, *_ in loaded if mod.column in m.feature_dims}
        dim = mod.dim or next(iter(dims.values()), 0)
        wrong = {name: v for name, v in dims.items() if v != dim}
        if wrong:
            raise ConfigError(f"model.modalities.{k}: {mod.column} has width {dim} but {wrong} in data.datasets")
        if not dim:
            raise ConfigError(f"model.modalities.{k}: no manifest of data.datasets has column {mod.column}")
        modalities.append(replace(mod, dim=dim))
    features = {mod.column: mod.dim for mod in modalities}

    # 3) one epoch's training mix, and the validation rows
    sizes = [train.num_rows for _, _, train, _, _ in loaded]
    total = d.mix_epoch_clips or sum(sizes)
    counts = mix_counts(sizes, [e.weight for e in d.datasets], total)
    train_parts, val_parts = [], []
    for i, ((e, m, train, val, where), count) in enumerate(zip(loaded, counts)):
        if count == 0:
            raise ConfigError(f"data.datasets.{i}.weight: {e.weight} gives {e.name} no clip of the {total} "
                              f"per epoch; raise it or data.mix_epoch_clips")
        rng = np.random.default_rng([cfg.seed, zlib.crc32(e.name.encode())])
        drawn = train.take(pa.array(draw_indices(train.num_rows, count, rng)))
        packed = _pack(packing, i, drawn, where)
        train_parts.append(_combined_rows(drawn, e.name, d.train_split, packed, features))
        if val is not None:
            packed = _pack(packing, i, val, where)
            val_parts.append(_combined_rows(val, e.name, d.val_split, packed, features))
    mixed = pa.concat_tables(train_parts)
    mixed = mixed.take(pa.array(np.random.default_rng(cfg.seed).permutation(mixed.num_rows)))
    table = pa.concat_tables([mixed, *([_interleaved(val_parts)] if val_parts else [])])

    names = {e.name: n for e, m, *_ in loaded if (n := make_task(e.task).output_names(m)) is not None}
    combined = Manifest(table=table, class_names=[], num_classes=0, feature_dims=features,
                        path=Path(loaded[0][1].path), extra_metadata={TARGET_NAMES_KEY: names})
    model = with_kind(cfg.model, model_kind(cfg.model.kind).with_datasets, heads=heads, modalities=modalities,
                      head=replace(cfg.model.head, num_outputs=packed_width))
    print("[vidpeft] datasets: " + ", ".join(f"{h.name} ({h.task}, {h.num_outputs} outputs, {c} training clips "
                                             f"per epoch)" for h, c in zip(heads, counts)), flush=True)
    return replace(cfg, model=model), combined


def dataset_target_names(manifest: Manifest) -> dict[str, list[str]] | None:
    """Regression target names per dataset of a combined manifest (None for a single manifest)."""
    return manifest.extra_metadata.get(TARGET_NAMES_KEY)


def table_keys(metrics: dict, names: list[str]) -> list[str]:
    """Per-dataset metrics for the run's final table: each dataset's headline metric, train and val."""
    return [k for n in names for stage in ("train", "val") for metric in ("top1", "mAP", "mse")
            if (k := f"{stage}_{n}_{metric}") in metrics]
