"""`vidpeft zeroshot`: classify clips among class names never seen in training (M2-CLIP, Eq. 11).

Clips stream through the same Ray Data decoder pool as training; scores are the cosine similarity
between the video embedding and each class's prompt embeddings (templates averaged), so any list of
names works. Run on a trained run directory (its adapters are loaded, its heads skipped) or on a
frozen-CLIP preset (the paper's zero-shot baseline). With several views per video (clips x crops,
``data.eval_clips`` / ``data.eval_crops``, or ``--clips`` / ``--crops``) the views' softmax scores
are averaged per video before top-1/top-5. ``evaluate_zeroshot`` is also what closes a training run
on a held-out label set (``pipelines/infer/zeroshot_close.py``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import torch

from components.config import ConfigError, resolve
from components.data.manifest import read_manifest
from components.engine import evaluate
from components.model import build_model, model_kind, zero_shot_kinds
from components.tasks import SingleLabel
from pipelines.run import preflight
from pipelines.config import ExperimentConfig, load_saved_config
from pipelines.data.eval_views import check_view_counts, num_views
from pipelines.data.ingest import build_dataset, decode_settings
from pipelines.runtime.ray_env import ensure_ray


def check_templates(templates, where: str) -> None:
    """Each prompt template holds exactly one ``{}`` (where the class name goes); ``where`` names the input
    (the --template flag or the zeroshot.templates key)."""
    for t in templates:
        if t.count("{}") != 1:
            raise ConfigError(f"{where} {t!r} must contain exactly one '{{}}' (where the class name goes)")


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


def load_label_set(manifest: str, classes: str | None, split: str, check_files: bool = True,
                   split_hint: str = "--split") -> tuple[list[str], pa.Table]:
    """(class names, the split's rows) of a labelled manifest. Names come from ``classes`` (a file) or,
    when it is empty, from the manifest's own class_names; their count must match the labels'."""
    data = read_manifest(manifest, check_files=check_files, required_columns=["label"])
    if classes:
        names, source = read_class_names(classes), str(classes)
    else:
        names, source = list(data.class_names), f"{manifest} (metadata class_names)"
        if not names:
            raise ConfigError(f"{manifest} names no classes in its metadata: give a classes file")
    if data.num_classes != len(names):
        raise ConfigError(f"{manifest} labels index {data.num_classes} classes but {source} names {len(names)}")
    table = data.split(split)
    if table.num_rows == 0:
        raise ConfigError(f"{manifest} has no rows in split {split!r} (choose one with {split_hint})")
    return names, table


def resolve_config(checkpoint: str | None, files: list[str], overrides: list[str]) -> ExperimentConfig:
    run = None
    if checkpoint:
        saved = Path(checkpoint) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"{checkpoint} is not a vidpeft run directory (no config.yaml)")
        run = load_saved_config(saved)
    cfg = resolve(ExperimentConfig, files, overrides, base=run)
    if not model_kind(cfg.model.kind).zero_shot:
        raise ConfigError(f"model.kind is {cfg.model.kind!r}: zero-shot needs a text tower "
                          f"(model.kind: {' or '.join(zero_shot_kinds())})")
    return cfg


def evaluate_zeroshot(cfg: ExperimentConfig, model, table: pa.Table, names: list[str], templates: list[str] | None,
                      device: torch.device | str = "cpu") -> dict:
    """Top-1/top-5 of ``model.zero_shot_logits`` over ``names`` on ``table``'s clips, decoded as the
    run evaluates (sampling, crop, data.eval_clips x eval_crops views, averaged per video)."""
    # The run's evaluation decoding, with this label set and no side modalities.
    settings = replace(decode_settings(cfg, training=False), task="single_label", num_outputs=len(names),
                       modalities=(), datasets=())
    ds = build_dataset(table, settings, cfg.data.decode_actors, cfg.data.decode_cpus, cfg.data.decode_batch_size)
    model = model.to(device).eval()

    def scores(batch: dict) -> dict:  # (B*V, T, S, S, 3) -> (B*V, C)
        return {"logits": model.zero_shot_logits(batch["video"], names, templates)}

    batches = ds.iter_torch_batches(batch_size=cfg.data.eval_batch_size)
    r = evaluate(model, batches, SingleLabel(len(names)), device, forward=scores, keep_scores=False)
    result = {k: v for k, v in r.metrics.items() if k != "loss"}
    views = num_views(settings) if r.clips else 0  # views per video
    result.update(clips=r.clips, skipped_clips=r.skipped, classes=len(names), views=views)
    return result


def run_zeroshot(checkpoint: str | None, classes: str, manifest: str, files: list[str] = (), overrides: list[str] = (),
                 split: str = "test", templates: list[str] | None = None, output: str | None = None,
                 clips: int | None = None, crops: int | None = None) -> dict:
    """``clips`` / ``crops``: views per video (None = the config's data.eval_clips / eval_crops)."""
    from pipelines.runtime.driver_stderr import quiet_driver_lines

    check_view_counts(clips, crops)
    check_templates(templates or (), "--template")
    views = [f"data.eval_{k}={v}" for k, v in (("clips", clips), ("crops", crops)) if v is not None]
    cfg = resolve_config(checkpoint, list(files), [*overrides, *views])
    names, table = load_label_set(manifest, classes, split, cfg.data.check_files)

    preflight.check_model(cfg, names, len(names))  # a bad model or weights file: one line, nothing loaded unsafely
    model = build_model(cfg.model, len(names), names).eval()
    loaded = []
    if checkpoint and (Path(checkpoint) / "weights.safetensors").is_file():
        loaded = model.load_transfer_weights(str(Path(checkpoint) / "weights.safetensors"))

    ensure_ray(cfg.scaling.ray_address)
    with quiet_driver_lines():  # the driver executes the dataset: Ray's false alarm about its actor pool off
        result = evaluate_zeroshot(cfg, model, table, names, templates or None)
    result.update(split=split, adapters_loaded=len(loaded), checkpoint=checkpoint,
                  manifest=str(Path(manifest).absolute()))
    out = Path(output) if output else (Path(checkpoint) if checkpoint else Path(".")) / "zeroshot.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"zero-shot over {len(names)} classes, {result['clips']} clips x {result['views']} view(s) "
          f"({result['skipped_clips']} skipped): top1 {result.get('top1', float('nan')):.4f}  "
          f"top5 {result.get('top5', float('nan')):.4f}\nwritten: {out}")
    return result
