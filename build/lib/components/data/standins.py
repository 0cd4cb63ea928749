"""Tiny synthetic stand-ins for the papers' datasets, so every paper-table campaign runs end to end
on this machine (``vidpeft standins``; campaigns' ``tiny`` profile reads them from ``standins/``).

One set of synthetic clips (components/data/synth.py: moving shapes, class = direction) is written
once; each stand-in is a manifest over the same videos with the columns its dataset has:

- ``ek100``: single-label, side modalities audio and flow (EPIC-KITCHENS-100: RGB, audio, flow);
- ``udiva``: regression (5 targets, like OCEAN), audio and transcript text (UDIVA v0.5);
- ``mpiigi``: multi-label, audio (MPIIGroupInteraction);
- ``k400``: single-label with action-like class names (Kinetics-400, M2-CLIP's training set);
- ``ucf101_fold{1,2,3}``: three "official splits" whose test lists are different thirds of the
  clips under other class names (UCF101 zero-shot protocol: mean and std over the three).

Side modalities are sequences of ``tokens`` vectors per clip (manifest ``feature_tokens``), each a
class code plus noise, so a cross-attention adapter has something to read. The stand-ins say
nothing about the papers' numbers: they only exercise every row's code path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from components.data.manifest import read_manifest, write_manifest
from components.data.synth import make_synthetic_dataset

MODALITIES = {"ek100": ("audio", "flow"), "udiva": ("audio", "text"), "mpiigi": ("audio",), "k400": (),
              "ucf101": ()}
K400_NAMES = ["swimming", "running", "jumping", "climbing", "dancing", "cooking"]
UCF_NAMES = ["surfing", "rowing", "skiing", "boxing", "fencing", "diving"]
FEATURE_TYPE = pa.list_(pa.float32())


def _features(labels: np.ndarray, num_classes: int, tokens: int, dim: int, seed: int) -> pa.Array:
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(num_classes, tokens, dim)).astype(np.float32)
    noise = rng.normal(scale=0.5, size=(len(labels), tokens, dim)).astype(np.float32)
    return pa.array([(codes[c] + n).reshape(-1).tolist() for c, n in zip(labels, noise)], FEATURE_TYPE)


def make_standins(out: str | Path, num_classes: int = 4, clips_per_class: int = 3, frames: int = 4,
                  size: int = 32, tokens: int = 4, dim: int = 8, seed: int = 0) -> dict[str, Path]:
    """Write the stand-ins under ``out``; returns name -> manifest path."""
    if num_classes > len(K400_NAMES):
        raise ValueError(f"at most {len(K400_NAMES)} classes, got {num_classes}")
    out = Path(out)
    base = read_manifest(make_synthetic_dataset(out / "clips", num_classes=num_classes, clips_per_class=clips_per_class,
                                                frames=frames, size=size, seed=seed, feature_dim=0,
                                                val_fraction=1 / clips_per_class, contrast=0.5))
    table = base.table.drop_columns([c for c in ("regression",) if c in base.table.column_names])
    labels = np.asarray(table["label"].to_pylist())
    names = [n.replace(" ", "_") for n in base.class_names]
    written: dict[str, Path] = {}

    def write(name: str, t: pa.Table, class_names: list[str], modalities=(), regression_names=None) -> None:
        for j, m in enumerate(modalities):
            t = t.append_column(f"feat_{m}", _features(labels, num_classes, tokens, dim, seed + 1 + j))
        dims = {f"feat_{m}": dim for m in modalities}
        written[name] = write_manifest(out / name / "manifest.parquet", t, class_names, feature_dims=dims,
                                       feature_tokens={k: tokens for k in dims}, regression_names=regression_names)

    write("ek100", table, names, MODALITIES["ek100"])
    ocean = np.eye(5, dtype=np.float32)[labels % 5] * 0.5 + 0.25  # 5 targets in [0.25, 0.75]
    write("udiva", table.append_column("regression", pa.array(ocean.tolist(), FEATURE_TYPE)), names,
          MODALITIES["udiva"], regression_names=["O", "C", "E", "A", "N"])
    multi = [[int(c), int((c + 1) % num_classes)] for c in labels]  # two behaviours per clip
    write("mpiigi", table.append_column("multi_label", pa.array(multi, pa.list_(pa.int64()))), names,
          MODALITIES["mpiigi"])
    write("k400", table, K400_NAMES[:num_classes])
    # the three zero-shot splits: every clip is in the test list of exactly one fold
    order = np.random.default_rng(seed).permutation(len(labels))
    for fold in range(3):
        test = set(order[fold::3].tolist())
        split = pa.array(["test" if i in test else "train" for i in range(len(labels))], pa.string())
        t = table.set_column(table.schema.get_field_index("split"), "split", split)
        write(f"ucf101_fold{fold + 1}", t, UCF_NAMES[:num_classes])
    return written
