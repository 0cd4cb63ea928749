"""`vidpeft evaluate`: a trained model (run directory or export) on any manifest split.

1) driver: rebuild the run's description (pipelines/infer/trained.py), read the manifest (same classes as the
   run, the split has rows), views from --views/--clips/--crops or the run's data.eval_clips x eval_crops;
2) one Ray task per worker (--workers: each a shard of the split, pipelines/infer/eval_shards.py) with a
   Train worker's resources (a GPU when the cluster has one) builds the model and runs the evaluation
   pass over its own Ray Data decoder pool (the training loop's validation decoding); the driver merges
   their accumulators, and --save-scores writes the per-video scores (Parquet);
3) driver: eval_<split>.json with the task's metrics, and for classification per-class accuracy, mean
   class accuracy and a confusion matrix (CSV + PNG with class names); all logged to the run's MLflow
   run as eval_<split>_<metric> (or to a new run when the run has no reachable store).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.config import ConfigError
from components.multihead.config import dataset_heads
from pipelines.runtime import tracking
from pipelines.data.eval_views import check_view_counts
from pipelines.infer.eval_shards import combine, shards, write_scores
from pipelines.runtime.ray_env import log_level
from pipelines.infer.trained import Trained, check_classes, check_split, load_trained, run_tracking


def evaluation_pass(model, dataset, cfg, device, names=None, progress=None) -> dict:
    """The engine's evaluation pass (components.engine.evaluate, what computes val_* in training: same
    batch size, views averaged by the Task, same precision, views in chunks of data.eval_max_views) over
    ``dataset``; returns its metrics and accumulator, the per-video probabilities with their targets
    (for per-class metrics) and table rows (when the batches carry ``eval_row``), and the counts.
    ``progress``: a ``pipelines.run.progress.Progress`` told of every batch."""
    import torch

    from components.engine import evaluate
    from components.tasks import model_task
    from pipelines.data.ingest import EVAL_ROW

    targets: list[torch.Tensor] = []  # per view: the engine hands the model (B*V, ...) flattened views
    rows: list[torch.Tensor] = []

    def forward(flat: dict) -> dict:
        targets.append(flat["target"].detach().cpu())
        if EVAL_ROW in flat:
            rows.append(flat[EVAL_ROW].detach().cpu())
        return model({k: v for k, v in flat.items() if k != EVAL_ROW})

    batches = dataset.iter_torch_batches(batch_size=cfg.data.eval_batch_size, device=device, drop_last=False)
    on_batch = (lambda clips, _loss: progress.update(clips)) if progress is not None else None
    r = evaluate(model, batches, model_task(cfg.model), device, cfg.optim.amp, names=names, forward=forward,
                 on_batch=on_batch, max_views=cfg.data.eval_max_views)
    if progress is not None:
        progress.close()
    views = cfg.data.eval_clips * cfg.data.eval_crops
    scores = r.scores.numpy() if r.scores is not None else np.zeros((0, cfg.model.head.num_outputs))
    target = torch.cat(targets)[::views].numpy() if targets else np.zeros((0,))  # views of a video are consecutive
    row = torch.cat(rows)[::views].numpy() if rows else np.zeros((0,), dtype=np.int64)
    return {"metrics": r.metrics, "acc": r.acc, "scores": scores, "targets": target, "rows": row,
            "skipped": r.skipped, "clips": r.clips, "fallback": r.fallback}


def _evaluate_task(trained: Trained, table, settings, level: str = "info", label: str = "evaluate") -> dict:
    """Runs in a Ray task: build the model, decode the split (or a shard of it) with the actor pool,
    evaluate (a progress line every ``log.progress_steps`` batches / ``log.progress_seconds``, unless
    ``level`` is quiet); ``rows``: the split's row of every scored video."""
    import math

    import torch

    from pipelines.data.ingest import build_dataset
    from pipelines.run.progress import Progress
    from pipelines.infer.trained import build_trained

    cfg = trained.cfg
    if cfg.scaling.torch_threads > 0:
        torch.set_num_threads(cfg.scaling.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_trained(trained, device)
    d = cfg.data
    ds = build_dataset(table, settings, d.decode_actors, d.decode_cpus, d.decode_batch_size)
    progress = Progress(label, math.ceil(table.num_rows / d.eval_batch_size), device=device,
                        every_steps=cfg.log.progress_steps, every_seconds=cfg.log.progress_seconds,
                        enabled=level != "quiet")
    return evaluation_pass(model, ds, cfg, device, trained.target_names or None, progress)


def evaluate_here(trained: Trained, table, settings, level: str, label: str) -> dict:
    """``_evaluate_task`` in this process (pipelines/run/in_process.py: ``scores_here``), on the threads Ray
    would give the task (``threads_as_a_worker``). The driver executes the dataset here, so its core worker
    creates the decoder pool: Ray's false alarm about that is dropped, as predict drops it."""
    from pipelines.run.in_process import threads_as_a_worker
    from pipelines.runtime.driver_stderr import quiet_driver_lines

    with quiet_driver_lines(), threads_as_a_worker(trained.cfg.scaling.cpus_per_worker):
        return _evaluate_task(trained, table, settings, level, label)


MIN_TASK_CPUS = 0.01


def task_cpus(cfg, workers: int) -> float:
    """CPUs each evaluation task reserves: scaling.cpus_per_worker, less when the tasks and their decoder
    actors would not fit on the cluster together. An evaluation task mostly waits for its decoders (and they
    for it), as training's validation does; with every CPU held by the tasks, their decoders would never
    start and the command would hang (2 workers x 1 CPU on a 2-CPU machine)."""
    import ray

    decoders = cfg.data.decode_cpus  # each task's pool starts with one actor (min_size 1): what must fit beside it
    total = float(ray.cluster_resources().get("CPU", 0.0))
    wanted = cfg.scaling.cpus_per_worker
    if workers * (wanted + decoders) <= total:
        return wanted
    return max(MIN_TASK_CPUS, round(total / workers - decoders, 2))


def class_report(scores: np.ndarray, targets: np.ndarray, names: list[str]) -> dict:
    """Per-class accuracy (None for a class with no clip), their mean over present classes, confusion."""
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)  # rows: true class, columns: predicted
    np.add.at(confusion, (targets.astype(np.int64), scores.argmax(axis=1)), 1)
    support = confusion.sum(axis=1)
    per_class = {n: (float(confusion[i, i] / support[i]) if support[i] else None) for i, n in enumerate(names)}
    present = [v for v in per_class.values() if v is not None]
    return {"per_class_accuracy": per_class, "mean_class_accuracy": float(np.mean(present)) if present else None,
            "confusion": confusion, "support": {n: int(s) for n, s in zip(names, support)}}


def write_confusion(confusion: np.ndarray, names: list[str], csv_path: Path, png_path: Path, title: str) -> None:
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *names])
        for n, row in zip(names, confusion):
            w.writerow([n, *row.tolist()])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(names) <= 30:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def _open_run(trained: Trained, split: str) -> tuple[str, str, bool]:
    """(URI, run id, reopened): the run's MLflow run when its store still has it, else a new run."""
    uri, run_id = run_tracking(trained)
    if run_id is not None:
        return uri, run_id, True
    run_id = tracking.start_run(uri, trained.cfg.tracking.experiment, f"{trained.cfg.name}-eval-{split}", {},
                                tags={"vidpeft.evaluated": str(trained.weights)})
    return uri, run_id, False


def run_evaluate(source: str, manifest: str | None = None, split: str = "test", clips: int | None = None,
                 crops: int | None = None, backbone_checkpoint: str | None = None, out: str | None = None,
                 log: bool = True, workers: int = 1, save_scores: str | None = None,
                 max_views: int | None = None) -> dict:
    """``workers``: evaluation workers, each a shard of the split (pipelines/infer/eval_shards.py);
    ``save_scores``: a Parquet file of per-video scores; ``max_views``: data.eval_max_views (None = the run's)."""
    import ray

    from components.data.manifest import read_manifest
    from components.io import absolute, exists, is_uri
    from components.tasks import make_task
    from pipelines.data.ingest import decode_settings
    from pipelines.run.in_process import scores_here
    from pipelines.runtime.ray_env import ensure_ray, on_loopback, use_gpu

    # 1) options, model, manifest and views, checked before Ray starts
    check_view_counts(clips, crops)
    split = check_split(split)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    t = load_trained(source, backbone_checkpoint)
    if dataset_heads(t.cfg.model):
        raise ConfigError(f"{source}: a multi-dataset run is evaluated per dataset during training; evaluate "
                          f"takes single-head runs")
    data = t.cfg.data
    data = replace(data, eval_clips=data.eval_clips if clips is None else clips,
                   eval_crops=data.eval_crops if crops is None else crops,
                   eval_max_views=data.eval_max_views if max_views is None else max_views)
    try:
        data.__post_init__()
    except ValueError as e:
        raise ConfigError(f"--views/--clips/--crops/--max-views: {e}") from None
    cfg = replace(t.cfg, data=data)
    t = replace(t, cfg=cfg)
    manifest = manifest or cfg.data.manifest
    if not manifest:
        raise ConfigError(f"{source}: the run names no manifest: pass --manifest")
    if not exists(manifest):  # a local file or an s3:// / gs:// / https:// object
        relative = manifest == cfg.data.manifest and not is_uri(manifest) and not Path(manifest).is_absolute()
        hint = " (the run's data.manifest, relative to where it was trained); pass --manifest PATH" if relative else ""
        raise ConfigError(f"manifest not found: {manifest}{hint}")
    m = read_manifest(manifest, check_files=cfg.data.check_files, required_columns=[make_task(t.task).column],
                      feature_columns=[mod.column for mod in cfg.model.modalities])
    check_classes(t, manifest, m.class_names)
    table = m.split(split)
    if table.num_rows == 0:
        splits = sorted(set(m.table["split"].to_pylist())) if "split" in m.table.column_names else []
        raise ConfigError(f"{manifest}: no rows in split {split!r} (splits: {splits})")
    views = cfg.data.eval_clips * cfg.data.eval_crops

    # 2) evaluation workers on Ray (one per shard of the split), each fed by its decoder actors
    ensure_ray(cfg.scaling.ray_address)
    gpu = use_gpu(cfg.scaling.use_gpu)
    level = log_level()
    parts = shards(table, workers)
    if level != "quiet":  # -q: the results only
        print(f"[vidpeft] evaluating {source} on {manifest} split {split}: {table.num_rows} clips x {views} view(s)"
              f"{f' on {len(parts)} workers' if len(parts) > 1 else ''}{' (GPU)' if gpu else ''}", flush=True)
    settings = replace(decode_settings(cfg, training=False), datasets=())
    labels = [f"evaluate {i + 1}/{len(parts)}" if len(parts) > 1 else "evaluate" for i in range(len(parts))]
    if scores_here(cfg.scaling, len(parts), on_loopback(), gpu):
        res = combine([evaluate_here(t, parts[0], settings, level, labels[0])], t.target_names or None)
    else:
        task = ray.remote(_evaluate_task).options(num_cpus=task_cpus(cfg, len(parts)), num_gpus=1 if gpu else 0)
        res = combine(ray.get([task.remote(t, part, settings, level, label) for part, label in zip(parts, labels)]),
                      t.target_names or None)

    # 3) report
    metrics = dict(res["metrics"])
    result = {"split": split, "manifest": absolute(manifest), "model": str(source), "clips": res["clips"],
              "skipped_clips": res["skipped"], "fallback_clips": res["fallback"], "views": views,
              "views_spec": f"{cfg.data.eval_clips}x{cfg.data.eval_crops}", "workers": len(parts), "metrics": metrics}
    out_dir = Path(out) if out else (t.run_dir or Path(source).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    if make_task(t.task).one_class_per_clip and len(res["scores"]):
        rep = class_report(res["scores"], res["targets"], t.output_names)
        metrics["mean_class_accuracy"] = rep["mean_class_accuracy"]
        result.update(per_class_accuracy=rep["per_class_accuracy"], support=rep["support"],
                      confusion_matrix=rep["confusion"].tolist(), class_names=t.output_names)
        csv_path, png_path = out_dir / f"confusion_{split}.csv", out_dir / f"confusion_{split}.png"
        write_confusion(rep["confusion"], t.output_names, csv_path, png_path, f"{Path(source).name}: {split}")
        files += [csv_path, png_path]
    if save_scores:
        ids = table["clip_id"].take(pa.array(res["rows"], pa.int64())).to_pylist()
        meta = {"output_names": list(t.output_names or []), "views": result["views_spec"], "model": str(source),
                "manifest": result["manifest"], "split": split}
        files.append(write_scores(save_scores, ids, res["targets"], res["scores"], t.task, meta))
    mlflow = _open_run(t, split) if log and cfg.tracking.enabled else None
    if mlflow:
        result["mlflow_run_id"] = mlflow[1]
    json_path = out_dir / f"eval_{split}.json"
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, json_path)
    files.insert(0, json_path)
    if mlflow:
        uri, run_id, reopened = mlflow
        tracking.log_metrics(uri, run_id, {f"eval_{split}_{k}": v for k, v in metrics.items() if v is not None}, 0)
        for f in files:
            tracking.log_artifact(uri, run_id, f, f"eval_{split}")
        if not reopened:
            tracking.end_run(uri, run_id)
    shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    fallback = f", {res['fallback']} by the fallback decoder" if res["fallback"] else ""
    print(f"[vidpeft] {split}: {res['clips']} clips ({res['skipped']} skipped{fallback})  {shown}", flush=True)
    print(f"[vidpeft] written: {', '.join(str(f) for f in files)}", flush=True)
    return result
