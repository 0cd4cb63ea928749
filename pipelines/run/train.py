"""`vidpeft train`: the driver, as a run object with one method per phase.

    check -> open (output dir, tracking) -> start Ray -> plan (datasets, trainer) -> fit -> close

Everything that must be undone whatever happens (the output dir's lock, MLflow runs left open by a
failure, the live progress board) is entered on one ExitStack, closed in reverse order on any exit.

Output contract (later tooling relies on it): OUTPUT_DIR holds config.yaml (the resolved config),
run_info.json (MLflow run id, tracking URI), weights.safetensors (final trainable weights with the
model config in its metadata) and metrics.json (final metrics + MLflow run id).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from components.config import ConfigError, dump_yaml, to_dict
from components.multihead.config import dataset_heads
from pipelines.config import ExperimentConfig
from pipelines.data import multi_dataset
from pipelines.data.decoder_pool import AUTO, auto_decode_actors
from pipelines.data.epoch_stream import rows_per_worker
from pipelines.data.ingest import build_dataset, decode_settings
from pipelines.infer import trained, zeroshot_close
from pipelines.run import best, preflight
from pipelines.run.checkpoints import WEIGHTS, epoch_of, latest_checkpoint
from pipelines.run.inputs import check_inputs, output_dir, storage_location
from pipelines.run.lock import hold_run_lock
from pipelines.run.fault_hook import fault_from_env
from pipelines.run.in_process import InProcessTrainer, decide, gpu_mismatch
from pipelines.run.plan import RunPlan
from pipelines.run.progress_relay import LiveRelay
from pipelines.run.run_place import PLACE_KEY
from pipelines.run.status import runs_closed_on_failure
from pipelines.run.storage_check import check_storage
from pipelines.run.stream_position import TrainStream
from pipelines.run.summary import print_summary
from pipelines.run.train_loop import train_loop_per_worker
from pipelines.runtime import tracking
from pipelines.runtime.background import Background
from pipelines.runtime.ray_env import (PRESTART_WORKERS, ensure_ray, on_loopback, torch_config, train_logging, use_gpu,
                                      verbose)
from pipelines.runtime.redaction import redact_data, redact_urls
from pipelines.runtime.resource_wait import ResourceWait
from pipelines.runtime.stop_signals import stop_like_ctrl_c
from pipelines.runtime.train_env import apply_train_env

_stop_like_ctrl_c = stop_like_ctrl_c  # SIGTERM = Ctrl-C, bounded (pipelines/runtime/stop_signals.py)

VAL_DECODE_CPUS = 0.01  # Ray's CPU reservation of a validation decoder actor (see TrainRun.plan)


def run_train(cfg: ExperimentConfig, resume: bool = False, callbacks: list | None = None,
              in_process: bool | None = None) -> dict:
    """One Ray Train run. ``callbacks``: Ray Train callbacks (a Tune trial passes its reporter).
    ``in_process``: where a Tune trial trains, as it decided when it reserved its CPUs (None: by
    scaling.in_process). OUTPUT_DIR is locked for the whole run: a second run on it is refused
    (pipelines/run/lock.py)."""
    with contextlib.ExitStack() as stack:
        return TrainRun(cfg, resume, callbacks, stack, in_process).execute()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class TrainRun:
    """One `vidpeft train` on the driver. ``execute`` runs the phases in order; each phase reads what
    the earlier ones set on ``self`` and nothing else."""

    def __init__(self, cfg: ExperimentConfig, resume: bool, callbacks: list | None, stack: contextlib.ExitStack,
                 in_process: bool | None = None):
        self.cfg, self.resume, self.callbacks, self.stack = cfg, resume, callbacks, stack
        self.decided_in_process = in_process
        self.out = output_dir(cfg)
        self.storage = storage_location(cfg, self.out)
        # A Tune trial's run gets its final status from the search (tune.close_trial_runs): a trial the
        # scheduler stops may be torn down while it is still ending its run here, and a status written
        # then would land after the search's own
        self.in_trial = bool(callbacks)
        self.uri, self.run_id = "", None

    def execute(self) -> dict:
        self.stack.enter_context(hold_run_lock(self.out))
        self.opened = self.stack.enter_context(runs_closed_on_failure())
        self.check()
        self.open()
        self.start_ray()
        trainer = self.plan()
        result = self.fit(trainer)
        return self.close(result)

    # 1) inputs: manifest, config, model and weights, checked before anything starts
    def check(self) -> None:
        inputs = check_inputs(self.cfg)
        self.cfg, self.manifest, self.held_out = inputs.cfg, inputs.manifest, inputs.held_out
        self.metric, self.mode = best.checkpoint_metric(self.cfg)
        check_storage(self.storage)  # an object store: reachable and writable, before Ray starts
        self.restore = latest_checkpoint(self.storage)
        if self.restore and not self.resume:
            raise ConfigError(f"{self.out} already holds checkpoints of a run: add --resume to continue it, "
                              f"or choose another output_dir")
        if self.restore:  # before config.yaml is rewritten
            preflight.check_resume(self.cfg, self.manifest.class_names, self.restore, inputs.meta_model)
        d, m = self.cfg.data, self.manifest
        self.clips = clips = {split: min(m.split(split).num_rows, d.limit or 1 << 62)  # plan's counts too
                              for split in (d.train_split, d.val_split) if split}
        self._say(f"{self.cfg.name}: " + " / ".join(f"{n} {split}" for split, n in clips.items())
                  + f" clips{f', {len(m.class_names)} classes' if m.class_names else ''} from {d.manifest or 'data.datasets'}")

    def _say(self, line: str) -> None:
        """A start-up line for the person at the console: before the first epoch a run spends tens of
        seconds in Ray's start-up, which would otherwise pass in silence. Not in a search's trials."""
        if self.cfg.log.level != "quiet" and not self.in_trial:
            print(f"[vidpeft] {line}", flush=True)

    # 2) the output dir and tracking: the driver owns the MLflow run; workers log into it by id. The run is
    # created on a thread (about a second: MLflow's imports and its store) while Ray attaches and the datasets
    # are planned; plan() takes its id before the loop is given it. On any exit the thread is waited for, so
    # a run it created is in ``self.opened`` (marked FAILED on a failure) before the exit stack closes it.
    def open(self) -> None:
        cfg, out = self.cfg, self.out
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "config.yaml", redact_urls(dump_yaml(cfg)).encode())  # no URL credentials on disk
        trained.write_labels(out, self.manifest.class_names, self.manifest.regression_names)  # for predict/export
        info_file = out / "run_info.json"
        info = json.loads(info_file.read_text()) if (self.resume and info_file.exists()) else {}
        self.uri = tracking.resolve_tracking_uri(cfg.tracking.tracking_uri)
        self.tracking = Background(lambda: self._open_tracking(info_file, info), name="vidpeft-mlflow-start")
        self.stack.callback(self.tracking.settle, 30.0)  # after an error elsewhere: the run exists, then FAILED

    def _open_tracking(self, info_file: Path, info: dict) -> None:
        cfg, out = self.cfg, self.out
        if cfg.tracking.enabled:
            self.run_id = tracking.start_run(self.uri, cfg.tracking.experiment, cfg.tracking.run_name or cfg.name,
                                             tracking.flatten(to_dict(cfg)), tags=self._tags(),
                                             run_id=info.get("run_id"))
            if not self.in_trial:
                self.opened.append((self.uri, self.run_id))  # any failure from here on marks it FAILED
            if not info.get("run_id"):
                tracking.log_artifact(self.uri, self.run_id, out / "config.yaml")
        info_file.write_text(json.dumps({"run_id": self.run_id, "tracking_uri": redact_urls(self.uri),
                                         PLACE_KEY: str(out.absolute())}, indent=2))  # a copied run dir says so

    def _tags(self) -> dict[str, str]:
        """Output dir, the config's extra tags, and the parent run that nests this one (tune/ablate)."""
        tags = {"vidpeft.output_dir": str(self.out), **self.cfg.tracking.tags}
        if self.cfg.tracking.parent_run_id:
            tags["mlflow.parentRunId"] = self.cfg.tracking.parent_run_id
        return tags

    # 3) Ray: a running instance at scaling.ray_address (or a local one started now). On this machine, the
    # processes of the run's first actors (Ray Data's split coordinators, the decoder pool) start now, while
    # MLflow's run starts and the datasets are planned (ray_compat.prestart_workers)
    def start_ray(self) -> None:
        ensure_ray(self.cfg.scaling.ray_address)
        self.local = on_loopback()
        if self.local and not self.in_trial:  # a search's trials reuse the processes earlier trials left idle
            from pipelines.runtime.ray_compat import prestart_workers

            prestart_workers(PRESTART_WORKERS)

    # 4) the data streams and the trainer
    def plan(self):
        import ray.train
        from ray.train.torch import TorchTrainer

        cfg, manifest, d = self.cfg, self.manifest, self.cfg.data
        # Datasets by index, so skipped clips are counted per dataset on the workers (several datasets: in
        # model.heads order, since the index also routes each clip to its head).
        names = (tuple(h.name for h in dataset_heads(cfg.model))
                 or tuple(sorted(set(manifest.table["dataset"].to_pylist()))))
        train_clips = self.clips[d.train_split]
        try:  # every worker needs at least one clip per epoch: say so here, not in a worker's traceback
            rows_per_worker(train_clips, cfg.scaling.num_workers)
        except ValueError as e:
            raise ConfigError(f"scaling.num_workers: {e}") from None
        # The training split: one stream over the epochs still to run (the decoder pool lives for the run)
        first_epoch = epoch_of(ray.train.Checkpoint(self.restore)) + 1 if self.restore else 0
        remaining = range(first_epoch, max(cfg.optim.epochs, first_epoch + 1))
        train_settings = decode_settings(cfg, True, names)
        actors = self.decoder_pool(manifest.split(d.train_split), train_settings)
        # built by Ray Train at each start of the workers (a restart too), from the newest checkpoint's position
        datasets = {"train": TrainStream(manifest.split(d.train_split), train_settings, actors, d.decode_cpus,
                                         d.decode_batch_size, d.limit, cfg.optim.epochs, self.storage, verbose())}
        # Validation: a stream too with one worker (its epochs are then exact); with several, Ray's split
        # cannot give each worker exactly its share of every epoch, so a dataset per epoch.
        val_stream = cfg.scaling.num_workers == 1
        if d.val_split:
            # Validation decodes while training waits for it: its decoders work on the CPUs that the paused
            # training pool and the waiting Train worker leave idle, so they reserve next to none. A full
            # reservation would add up to more CPUs than a small machine has, and validation would wait
            # for them forever.
            datasets["val"] = build_dataset(manifest.split(d.val_split), decode_settings(cfg, False, names),
                                            actors, VAL_DECODE_CPUS, d.decode_batch_size, d.limit,
                                            epochs=remaining if val_stream else None)
        gpu = use_gpu(cfg.scaling.use_gpu)
        resources = {"CPU": cfg.scaling.cpus_per_worker, **({"GPU": 1} if gpu else {})}
        self.tracking.result()  # the MLflow run (self.run_id), before the loop is given its id
        # a terminal: rank 0's progress is drawn in place on it (Ray forwards worker output line by line)
        self.relay = self.stack.enter_context(LiveRelay(enabled=cfg.log.level != "quiet"))
        plan = RunPlan(
            config=cfg, num_outputs=cfg.model.head.num_outputs, class_names=manifest.class_names,
            target_names=manifest.regression_names,
            dataset_target_names=multi_dataset.dataset_target_names(manifest),
            tracking_uri=self.uri if self.run_id else None, run_id=self.run_id, has_val=bool(d.val_split),
            train_clips=train_clips,
            val_clips=self.clips.get(d.val_split, 0),
            val_stream=val_stream, progress_board=self.relay.name or "", dataset_names=list(names),
            resume_from=str(self.restore) if self.restore else None, storage=self.storage,
            checkpoint_metric=self.metric, checkpoint_mode=self.mode, mid_epoch=not self.in_trial,
            fault=fault_from_env())
        local = self.local
        name = f"train-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"  # unique within a second
        # Ray keeps the best `keep` checkpoints by the metric (and the latest, for resume)
        checkpoints = ray.train.CheckpointConfig(num_to_keep=cfg.scaling.keep_checkpoints or cfg.checkpoint.keep,
                                                 checkpoint_score_attribute=self.metric,
                                                 checkpoint_score_order=self.mode)
        if self.in_process(local, gpu):
            return InProcessTrainer(train_loop_per_worker, plan.to_dict(), datasets, self.storage, name, checkpoints,
                                    threads=max(1, int(cfg.scaling.cpus_per_worker)), callbacks=self.callbacks,
                                    train_log_level=train_logging().log_level)
        apply_train_env(local=local)  # Ray Train's poll interval and watchers (pipelines/runtime/train_env.py)
        return TorchTrainer(
            train_loop_per_worker,
            train_loop_config=plan.to_dict(),
            torch_config=torch_config(),  # a local instance: the workers' rendezvous listens on loopback only
            scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=gpu,
                                                   resources_per_worker=resources),
            run_config=ray.train.RunConfig(
                name=name, storage_path=self.storage,
                failure_config=ray.train.FailureConfig(
                    max_failures=cfg.scaling.failures_allowed(not local)),  # a cluster: restart lost workers
                checkpoint_config=checkpoints,
                callbacks=self.callbacks or None,
                logging_config=train_logging(),
            ),
            datasets=datasets,
        )

    def in_process(self, local: bool, gpu: bool) -> bool:
        """Where the loop runs: a search's trial as it decided, any other run by scaling.in_process
        (``in_process.decide``: one worker on a local instance, no worker restarts, a GPU choice this process
        can honour)."""
        if self.decided_in_process is not None:  # a trial: its CPUs (and GPU) were reserved for this choice
            why = gpu_mismatch(gpu) if self.decided_in_process else ""
            if why:
                raise ConfigError(f"scaling.in_process: this trial reserved its resources to train in its own "
                                  f"process, and {why}")
            return self.decided_in_process
        return decide(self.cfg.scaling, local, gpu_mismatch(gpu))

    def decoder_pool(self, table, settings) -> int:
        """data.decode_actors, or (auto) sized from the measured decode cost (pipelines/data/decoder_pool.py)."""
        d, s = self.cfg.data, self.cfg.scaling
        if d.decode_actors != AUTO:
            return d.decode_actors
        actors, why = auto_decode_actors(table, settings, d.batch_size * s.num_workers,  # workers step at once
                                         d.auto_step_seconds, s.num_workers * s.cpus_per_worker, d.decode_cpus)
        if self.cfg.log.level != "quiet":
            cost = (f"{why['decode_s_per_clip']:.3f} s/clip x {why['clips_per_step']} clips / {why['step_s']:g} s "
                    f"per step" if why["decode_s_per_clip"] else "step time unknown: every free CPU")
            print(f"[vidpeft] decoder pool (data.decode_actors auto): {actors} actor(s) ({cost}; "
                  f"{why['free_cpus']:g} CPUs free)", flush=True)
        return actors

    # 5) fit: Ctrl-C and SIGTERM keep the checkpoints and say how to resume
    def fit(self, trainer):
        if self.restore:
            print(f"[vidpeft] resuming from {self.restore}", flush=True)
        n = self.cfg.scaling.num_workers
        if isinstance(trainer, InProcessTrainer):
            self._say(f"starting the data pipeline, training in this process (scaling.in_process); "
                      f"outputs in {self.out}")
        else:
            self._say(f"starting {n} Ray Train worker{'s' if n > 1 else ''} and the data pipeline; "
                      f"outputs in {self.out}")
        # a run, not a trial (a search's trials wait for their turn by design), whose workers Ray places
        placed_by_ray = not (self.in_trial or isinstance(trainer, InProcessTrainer))
        watch = ResourceWait() if placed_by_ray else contextlib.nullcontext()
        try:
            with _stop_like_ctrl_c(), watch:
                return trainer.fit()
        except (KeyboardInterrupt, SystemExit):  # Ray Train's SIGINT handler ends with sys.exit
            if self.in_trial:  # the search stopped this trial (Tune ends its thread at a report): it says so
                raise
            self._end_run("KILLED")
            print(f"[vidpeft] interrupted; the checkpoints so far are kept: rerun with --resume to continue "
                  f"(output_dir {self.out})", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        except BaseException:
            self._end_run("FAILED")
            raise
        finally:
            self.relay.__exit__(None, None, None)  # the bar stops before the summary prints (idempotent)

    def _end_run(self, status: str) -> None:
        if self.run_id and not self.in_trial:
            tracking.end_run(self.uri, self.run_id, status=status)

    # 6) close: best weights, metrics.json, zero-shot on held-out names, MLflow artifacts, the summary
    def close(self, result) -> dict:
        cfg, out, uri, run_id = self.cfg, self.out, self.uri, self.run_id
        # the run's result is its best epoch (by checkpoint.metric); the last epoch's scores are kept too
        best_ckpt, final = best.select_best(result, self.storage, self.metric, self.mode)
        final = best.summarise(final, dict(result.metrics or {}), self.metric, self.mode)
        if best_ckpt is not None:
            with best_ckpt.as_directory() as ckpt_dir:
                _write_atomic(out / WEIGHTS, (Path(ckpt_dir) / WEIGHTS).read_bytes())  # never half-written
        final.update(run_id=run_id, tracking_uri=uri if run_id else None, output_dir=str(out))
        if self.held_out is not None:  # zero-shot on the held-out label set with the trained adapters
            final.update(zeroshot_close.evaluate(cfg, self.held_out, out / WEIGHTS, uri, run_id,
                                                 final.get("epoch", 0)))
        _write_atomic(out / "metrics.json", json.dumps(redact_data(final), indent=2, default=str).encode())
        if run_id:
            if (out / WEIGHTS).exists():
                tracking.log_artifact(uri, run_id, out / WEIGHTS, "weights")
            tracking.log_artifact(uri, run_id, out / "metrics.json")
            tracking.end_run(uri, run_id)
        if not self.in_trial:  # a search prints one summary for all its trials
            print_summary(final, out, run_id, cfg.optim.epochs, [h.name for h in dataset_heads(cfg.model)])
        return redact_data(final)  # what callers print or store
