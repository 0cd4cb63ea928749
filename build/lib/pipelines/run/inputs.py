"""What a run reads and where it writes, checked on the driver before Ray starts.

``check_inputs`` is the one gate: `vidpeft train` calls it, and so do `tune` and `ablate` for each of
their trials' configs, so a bad manifest, metric, label set, model or weights file is one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from components.config import ConfigError
from components.data.manifest import Manifest, read_manifest
from components.model import model_kind
from components.tasks import make_task
from pipelines.config import ExperimentConfig
from pipelines.data import multi_dataset
from pipelines.infer import zeroshot_close
from pipelines.run import best, preflight

STORAGE_ENV = "VIDPEFT_STORAGE_PATH"


@dataclass
class Inputs:
    """A checked run: the config with what the manifest fills in, the manifest, the zero-shot label set
    (or None) and the model built on the meta device (shapes only: what resume checks compare with)."""

    cfg: ExperimentConfig
    manifest: Manifest
    held_out: object
    meta_model: object


def output_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.output_dir or Path("runs") / cfg.name).absolute()


def prepare_config(cfg: ExperimentConfig) -> tuple[ExperimentConfig, Manifest]:
    """Load the manifest and fill what the config leaves to it (class count, feature widths)."""
    if cfg.data.datasets or model_kind(cfg.model.kind).multi_dataset:  # several manifests, a head each
        return multi_dataset.prepare_multi_dataset(cfg)
    if not cfg.data.manifest:
        raise ConfigError("data.manifest: no manifest given (set it in the YAML or with --set data.manifest=PATH)")
    task = make_task(cfg.model.head.task)
    modal_cols = [m.column for m in cfg.model.modalities]
    manifest = read_manifest(cfg.data.manifest, check_files=cfg.data.check_files,
                             required_columns=[task.column], feature_columns=modal_cols)
    for split in [cfg.data.train_split] + ([cfg.data.val_split] if cfg.data.val_split else []):
        table = manifest.split(split)
        if table.num_rows == 0:
            raise ConfigError(f"data: split {split!r} of {manifest.path} has no rows")
        col = table[task.column]
        if col.null_count:
            raise ConfigError(f"{manifest.path}: column {task.column} has {col.null_count} empty "
                              f"value(s) in split {split!r}, but model.head.task={task.kind} needs it")
    num_outputs = cfg.model.head.num_outputs
    if num_outputs == 0:
        try:
            num_outputs = task.outputs_from_manifest(manifest, manifest.split(cfg.data.train_split))
        except ValueError as e:
            raise ConfigError(f"model.head.num_outputs: {e}") from None
    modalities = []
    for m in cfg.model.modalities:
        dim = manifest.feature_dims.get(m.column, 0)
        if m.dim and dim and m.dim != dim:
            raise ConfigError(f"model.modalities: {m.name} has dim {m.dim} but {m.column} in the manifest has {dim}")
        tokens = manifest.extra_metadata.get("feature_tokens", {}).get(m.column, 1) if dim else 0
        if m.tokens and tokens and m.tokens != tokens:
            raise ConfigError(f"model.modalities: {m.name} has tokens {m.tokens} but {m.column} in the manifest has {tokens}")
        modalities.append(replace(m, dim=m.dim or dim, tokens=m.tokens or tokens or 1))
    model = replace(cfg.model, head=replace(cfg.model.head, num_outputs=num_outputs), modalities=modalities)
    return replace(cfg, model=model), manifest


def check_inputs(cfg: ExperimentConfig) -> Inputs:
    """Everything a run checks before Ray starts, so a bad input is one line: the manifest (prepared
    config), the checkpoint metric, the zero-shot label set, the model and its weights files (built once,
    on the meta device)."""
    cfg, manifest = prepare_config(cfg)
    best.checkpoint_metric(cfg)  # what ranks checkpoints
    held_out = zeroshot_close.prepare(cfg)  # the zeroshot section's label set
    model = preflight.check_model(cfg, manifest.class_names)  # model and weights files
    return Inputs(cfg, manifest, held_out, model)


def storage_location(cfg: ExperimentConfig, out: Path) -> str:
    """Where Ray keeps this run's checkpoints: a local dir or a URI (s3://, gs://, file://, ...).

    scaling.storage_path, else VIDPEFT_STORAGE_PATH, is shared storage that many runs use, so each run
    gets its own folder ``<storage>/<name>``; neither set = OUTPUT_DIR/ray.
    """
    root = cfg.scaling.storage_path or os.environ.get(STORAGE_ENV, "")
    if not root:
        return str(out / "ray")
    if "://" not in root:
        root = str(Path(root).absolute())  # pyarrow (and Ray) take absolute local paths only
    return root.rstrip("/") + "/" + cfg.name
