"""`vidpeft train`: the driver. Validates inputs, sets up tracking, runs the TorchTrainer, writes results.

Output contract (later tooling relies on it): OUTPUT_DIR holds config.yaml (the resolved config),
run_info.json (MLflow run id, tracking URI), weights.safetensors (final trainable weights with the
model config in its metadata) and metrics.json (final metrics + MLflow run id).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from components.config import ConfigError, dump_yaml, to_dict
from components.data.manifest import Manifest, read_manifest
from components.multihead.config import dataset_heads
from components.tasks import make_task
from pipelines.run import best, preflight
from pipelines.data import multi_dataset
from pipelines.runtime import tracking
from pipelines.infer import trained, zeroshot_close
from pipelines.config import ExperimentConfig
from pipelines.run.checkpoints import WEIGHTS, epoch_of, latest_checkpoint
from pipelines.data.epoch_stream import rows_per_worker
from pipelines.run.progress_relay import LiveRelay
from pipelines.data.ingest import DecodeSettings, build_dataset, decode_settings
from pipelines.runtime.ray_env import ensure_ray, train_logging, use_gpu
from pipelines.runtime.redaction import redact_data, redact_urls
from pipelines.run.lock import hold_run_lock
from pipelines.run.status import runs_closed_on_failure
from pipelines.runtime.stop_signals import stop_like_ctrl_c
from pipelines.run.plan import RunPlan
from pipelines.run.train_loop import train_loop_per_worker

STORAGE_ENV = "VIDPEFT_STORAGE_PATH"


def output_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.output_dir or Path("runs") / cfg.name).absolute()


def prepare_config(cfg: ExperimentConfig) -> tuple[ExperimentConfig, Manifest]:
    """Load the manifest and fill what the config leaves to it (class count, feature widths)."""
    if cfg.data.datasets or cfg.model.kind == "multi_dataset":  # several manifests, a head each
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


def check_inputs(cfg: ExperimentConfig) -> tuple[ExperimentConfig, Manifest, object]:
    """Everything a run checks before Ray starts, so a bad input is one line: the manifest (prepared
    config), the checkpoint metric, the zero-shot label set, the model and its weights files (on the
    meta device). ``tune`` and ``ablate`` call it for their trials' configs too. Returns the prepared
    config, the manifest and the held-out label set (or None)."""
    cfg, manifest = prepare_config(cfg)
    best.checkpoint_metric(cfg)  # [after] what ranks checkpoints
    held_out = zeroshot_close.prepare(cfg)  # the zeroshot section's label set
    preflight.check_model(cfg, manifest.class_names)  # model and weights files
    return cfg, manifest, held_out


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


_stop_like_ctrl_c = stop_like_ctrl_c  # SIGTERM = Ctrl-C, bounded (pipelines/runtime/stop_signals.py)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _print_table(metrics: dict, out: Path, run_id: str | None, total: int, datasets: list[str] = ()) -> None:
    keys = [k for k in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
                        "val_mAP",
                        "val_mse", "zeroshot_top1", "zeroshot_top5", "skipped_clips_total", "fallback_clips_total",
                        "clips_per_sec",
                        "trainable_pct", "trainable_pct_with_head") if k in metrics]
    keys += multi_dataset.table_keys(metrics, list(datasets))  # several datasets: each one's headline metric
    # epochs as the progress lines count them (1-based); metrics.json keeps Ray's 0-based indices
    epochs = {label: f"{metrics[k] + 1}/{total}" for label, k in (("best epoch", "best_epoch"), ("last epoch", "last_epoch"))
              if isinstance(metrics.get(k), int)}
    width = max(len(k) for k in [*keys, *epochs]) if keys or epochs else 10
    print("\n" + "-" * (width + 16))
    for label, v in epochs.items():
        print(f"{label:<{width}}  {v:>12}")
    for k in keys:
        v = metrics[k]
        print(f"{k:<{width}}  {v:>12.4f}" if isinstance(v, float) else f"{k:<{width}}  {v:>12}")
    print("-" * (width + 16))
    if metrics.get("checkpoint_metric"):  # [after]
        print(f"best epoch by {metrics['checkpoint_metric']} ({metrics['checkpoint_mode']}): weights.safetensors "
              f"and the metrics above are from epoch {epochs.get('best epoch', '?')}")
    if metrics.get("stop_reason"):
        print(f"stopped: {metrics['stop_reason']}")
    if metrics.get("health"):
        print(f"health: {metrics['health']}")
    print(f"outputs: {out}" + (f"\nMLflow run: {run_id}" if run_id else ""))


def _run_tags(cfg: ExperimentConfig, out: Path) -> dict[str, str]:
    """Output dir, the config's extra tags, and the parent run that nests this one (tune/ablate)."""
    tags = {"vidpeft.output_dir": str(out), **cfg.tracking.tags}
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
    return tags


def run_train(cfg: ExperimentConfig, resume: bool = False, callbacks: list | None = None) -> dict:
    """One Ray Train run. ``callbacks``: Ray Train callbacks (a Tune trial passes its reporter).
    OUTPUT_DIR is locked for the whole run: a second run on it is refused (pipelines/run/lock.py)."""
    with hold_run_lock(output_dir(cfg)), runs_closed_on_failure() as opened:
        return _run_train(cfg, resume, callbacks, opened)


VAL_DECODE_CPUS = 0.01  # Ray's CPU reservation of a validation decoder actor (see _run_train)


def _run_train(cfg: ExperimentConfig, resume: bool, callbacks: list | None, opened: list) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    out = output_dir(cfg)
    storage = storage_location(cfg, out)
    # A Tune trial's run gets its final status from the search (tune.close_trial_runs): a trial the
    # scheduler stops may be torn down while it is still ending its run here, and a status written
    # then would land after the search's own
    in_trial = bool(callbacks)
    # 1) inputs: manifest and config, checked before anything starts
    cfg, manifest, held_out = check_inputs(cfg)
    metric, mode = best.checkpoint_metric(cfg)
    restore = latest_checkpoint(storage)
    if restore and not resume:
        raise ConfigError(f"{out} already holds checkpoints of a run: add --resume to continue it, "
                          f"or choose another output_dir")
    if restore:
        preflight.check_resume(cfg, manifest.class_names, restore)  # before config.yaml is rewritten
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "config.yaml", redact_urls(dump_yaml(cfg)).encode())  # no URL credentials on disk
    trained.write_labels(out, manifest.class_names, manifest.regression_names)  # [after] names for predict/export
    info_file = out / "run_info.json"
    info = json.loads(info_file.read_text()) if (resume and info_file.exists()) else {}

    # 2) tracking: the driver owns the MLflow run; workers log into it by id
    uri = tracking.resolve_tracking_uri(cfg.tracking.tracking_uri)
    run_id = None
    if cfg.tracking.enabled:
        run_id = tracking.start_run(uri, cfg.tracking.experiment, cfg.tracking.run_name or cfg.name,
                                    tracking.flatten(to_dict(cfg)), tags=_run_tags(cfg, out),
                                    run_id=info.get("run_id"))
        if not in_trial:
            opened.append((uri, run_id))  # any failure from here on marks it FAILED
        if not info.get("run_id"):
            tracking.log_artifact(uri, run_id, out / "config.yaml")
    info_file.write_text(json.dumps({"run_id": run_id, "tracking_uri": redact_urls(uri)}, indent=2))

    # 3) Ray and the data pipeline
    ensure_ray(cfg.scaling.ray_address)

    # Datasets by index, so skipped clips are counted per dataset on the workers (several datasets: in
    # model.heads order, since the index also routes each clip to its head).
    dataset_names = tuple(h.name for h in dataset_heads(cfg.model)) or tuple(sorted(set(manifest.table["dataset"].to_pylist())))

    def settings(training: bool) -> DecodeSettings:
        return decode_settings(cfg, training, dataset_names)

    d = cfg.data
    train_clips = min(manifest.split(d.train_split).num_rows, d.limit or 1 << 62)
    try:  # every worker needs at least one clip per epoch: say so here, not in a worker's traceback
        rows_per_worker(train_clips, cfg.scaling.num_workers)
    except ValueError as e:
        raise ConfigError(f"scaling.num_workers: {e}") from None
    # The training split: one stream over the epochs still to run (the decoder pool lives for the run)
    first_epoch = epoch_of(ray.train.Checkpoint(restore)) + 1 if restore else 0
    remaining = range(first_epoch, max(cfg.optim.epochs, first_epoch + 1))
    datasets = {"train": build_dataset(manifest.split(d.train_split), settings(True), d.decode_actors,
                                       d.decode_cpus, d.decode_batch_size, d.limit, epochs=remaining)}
    # Validation: a stream too with one worker (its epochs are then exact); with several, Ray's split
    # cannot give each worker exactly its share of every epoch, so a dataset per epoch.
    val_stream = cfg.scaling.num_workers == 1
    if d.val_split:
        # Validation decodes while training waits for it: its decoders work on the CPUs that the paused
        # training pool and the waiting Train worker leave idle, so they reserve next to none. A full
        # reservation would add up to more CPUs than a small machine has, and validation would wait for
        # them forever.
        datasets["val"] = build_dataset(manifest.split(d.val_split), settings(False), d.decode_actors,
                                        VAL_DECODE_CPUS, d.decode_batch_size, d.limit,
                                        epochs=remaining if val_stream else None)

    # 4) the Ray Train run
    gpu = use_gpu(cfg.scaling.use_gpu)
    resources = {"CPU": cfg.scaling.cpus_per_worker, **({"GPU": 1} if gpu else {})}
    # a terminal: rank 0's progress is drawn in place on it (Ray forwards worker output line by line)
    relay = LiveRelay(enabled=cfg.log.level != "quiet").__enter__()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=RunPlan(
            config=cfg,
            num_outputs=cfg.model.head.num_outputs,
            class_names=manifest.class_names,
            target_names=manifest.regression_names,
            dataset_target_names=multi_dataset.dataset_target_names(manifest),
            tracking_uri=uri if run_id else None,
            run_id=run_id,
            has_val=bool(d.val_split),
            train_clips=train_clips,
            val_clips=min(manifest.split(d.val_split).num_rows, d.limit or 1 << 62) if d.val_split else 0,
            val_stream=val_stream,
            progress_board=relay.name or "",
            dataset_names=list(dataset_names),
            resume_from=str(restore) if restore else None,
            storage=storage,
            checkpoint_metric=metric,
            checkpoint_mode=mode,
        ).to_dict(),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"train-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}",  # unique within a second
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
            # [after] Ray keeps the best `keep` checkpoints by the metric (and the latest, for resume)
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.scaling.keep_checkpoints or cfg.checkpoint.keep,
                checkpoint_score_attribute=metric, checkpoint_score_order=mode),
            callbacks=callbacks or None,
            logging_config=train_logging(),
        ),
        datasets=datasets,
    )
    if restore:
        print(f"[vidpeft] resuming from {restore}", flush=True)
    try:
        with _stop_like_ctrl_c():
            result = trainer.fit()
    except (KeyboardInterrupt, SystemExit):  # Ray Train's SIGINT handler ends with sys.exit
        if run_id and not in_trial:
            tracking.end_run(uri, run_id, status="KILLED")
        print(f"[vidpeft] interrupted; the checkpoints so far are kept: rerun with --resume to continue "
              f"(output_dir {out})", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except BaseException:
        if run_id and not in_trial:
            tracking.end_run(uri, run_id, status="FAILED")
        raise
    finally:
        relay.__exit__(None, None, None)

    # 5) results: final weights, metrics.json, MLflow artifacts
    # [after] the run's result is its best epoch (by checkpoint.metric); the last epoch's scores are kept too
    best_ckpt, final = best.select_best(result, storage, metric, mode)
    final = best.summarise(final, dict(result.metrics or {}), metric, mode)
    if best_ckpt is not None:
        with best_ckpt.as_directory() as ckpt_dir:
            _write_atomic(out / WEIGHTS, (Path(ckpt_dir) / WEIGHTS).read_bytes())  # never half-written
    final.update(run_id=run_id, tracking_uri=uri if run_id else None, output_dir=str(out))
    if held_out is not None:  # zero-shot on the held-out label set with the trained adapters
        final.update(zeroshot_close.evaluate(cfg, held_out, out / WEIGHTS, uri, run_id, final.get("epoch", 0)))
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(redact_data(final), indent=2, default=str))
    os.replace(tmp, out / "metrics.json")
    if run_id:
        if (out / WEIGHTS).exists():
            tracking.log_artifact(uri, run_id, out / WEIGHTS, "weights")
        tracking.log_artifact(uri, run_id, out / "metrics.json")
        tracking.end_run(uri, run_id)
    if not in_trial:  # a search prints one summary for all its trials
        _print_table(final, out, run_id, cfg.optim.epochs, [h.name for h in dataset_heads(cfg.model)])
    return redact_data(final)  # what callers print or store

