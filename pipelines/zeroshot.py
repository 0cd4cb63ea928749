"""`vidpeft zeroshot`: classify clips among class names never seen in training (M2-CLIP, Eq. 11).

Clips stream through the same Ray Data decoder pool as training; scores are the cosine similarity
between the video embedding and each class's prompt embeddings (templates averaged), so any list of
names works. Run on a trained run directory (its adapters are loaded, its heads skipped) or on a
frozen-CLIP preset (the paper's zero-shot baseline).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from components.config import ConfigError, resolve
from components.data.manifest import read_manifest
from components.model import build_model
from components.tasks import MetricAccumulator
from pipelines.config import ExperimentConfig
from pipelines.ingest import build_dataset, decode_settings
from pipelines.ray_env import ensure_ray


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line; blank lines and '#' comments are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file not found: {path}")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not names:
        raise ConfigError(f"{path}: no class names")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: duplicate class names {dupes}")
    return names


def resolve_config(checkpoint: str | None, files: list[str], overrides: list[str]) -> ExperimentConfig:
    run_files = []
    if checkpoint:
        saved = Path(checkpoint) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"{checkpoint} is not a vidpeft run directory (no config.yaml)")
        run_files.append(saved)
    cfg = resolve(ExperimentConfig, [*run_files, *files], overrides)
    if cfg.model.kind != "m2clip":
        raise ConfigError(f"model.kind is {cfg.model.kind!r}: zero-shot needs a text tower (model.kind=m2clip)")
    return cfg


def run_zeroshot(checkpoint: str | None, classes: str, manifest: str, files: list[str] = (), overrides: list[str] = (),
                 split: str = "test", templates: list[str] | None = None, output: str | None = None) -> dict:
    cfg = resolve_config(checkpoint, list(files), list(overrides))
    names = read_class_names(classes)
    data = read_manifest(manifest, check_files=cfg.data.check_files, required_columns=["label"])
    if data.num_classes != len(names):
        raise ConfigError(f"{manifest} labels index {data.num_classes} classes but {classes} names {len(names)}")
    table = data.split(split)
    if table.num_rows == 0:
        raise ConfigError(f"{manifest} has no rows in split {split!r} (choose one with --split)")

    model = build_model(cfg.model, len(names), names).eval()
    loaded = []
    if checkpoint and (Path(checkpoint) / "weights.safetensors").is_file():
        loaded = model.load_transfer_weights(str(Path(checkpoint) / "weights.safetensors"))
    templates = templates or None

    ensure_ray(cfg.scaling.ray_address)
    # The run's evaluation decoding (sampling, crop), with this label set and no side modalities.
    settings = replace(decode_settings(cfg, training=False), task="single_label", num_outputs=len(names),
                       modalities=())
    ds = build_dataset(table, settings, cfg.data.decode_actors, cfg.data.decode_cpus, cfg.data.decode_batch_size)
    acc, skipped = MetricAccumulator("single_label", len(names)), 0
    for batch in ds.iter_torch_batches(batch_size=cfg.data.eval_batch_size):
        ok = batch["ok"].bool()
        skipped += int((~ok).sum())
        if ok.any():
            with torch.no_grad():
                logits = model.zero_shot_logits(batch["video"][ok], names, templates)
            acc.update(logits, batch["target"][ok])
    result = {k: v for k, v in acc.compute().items() if k != "loss"}
    result.update(clips=acc.count, skipped_clips=skipped, classes=len(names), split=split,
                  adapters_loaded=len(loaded), checkpoint=checkpoint, manifest=str(Path(manifest).absolute()))
    out = Path(output) if output else (Path(checkpoint) if checkpoint else Path(".")) / "zeroshot.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"zero-shot over {len(names)} classes, {acc.count} clips ({skipped} skipped): "
          f"top1 {result.get('top1', float('nan')):.4f}  top5 {result.get('top5', float('nan')):.4f}\nwritten: {out}")
    return result
