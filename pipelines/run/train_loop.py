"""The per-worker training loop run by Ray Train (one copy per worker), as a run object with one
method per phase (``WorkerRun``, the worker's side of pipelines/run/train.py's ``TrainRun``):

    setup -> build_model -> build_optimizer -> restore -> open_logging -> open_streams
    -> per epoch: train_epoch -> validate -> count_clips -> decide_stop -> checkpoint_and_report
    -> teardown

Metrics are combined across workers; rank 0 writes the checkpoint and logs to MLflow; every worker
reports the same number of times. What the loop opens (the system-metrics sampler) is entered on one
ExitStack, closed however the loop ends.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from components.config import to_dict
from components.engine import (
    TrainStep, apply_mmap_threshold, make_scheduler, optimizer_for, run_pass, unwrap,
)
from components.flops import accounting
from components.model import build_model
from components.tasks import Task, model_task
from pipelines.run import fault_hook
from pipelines.run.best import Patience
from pipelines.run.health import RunHealth
from pipelines.run.checkpoints import MID_EPOCH, newer_in_storage, restore_checkpoint, save_checkpoint
from pipelines.config import ExperimentConfig
from pipelines.data.early_start import EarlyStart
from pipelines.data.epoch_stream import rows_per_worker, split_epochs
from pipelines.run.plan import RunPlan
from pipelines.run.progress import epoch_line, say
from pipelines.run.progress_relay import LINE, board_poster
from pipelines.run.regularisers import WorkerRegularisers
from pipelines.runtime.ray_env import quiet_train_worker
from pipelines.run.step_watch import StepWatch
from pipelines.run.stream_position import POSITION, MidEpoch
from pipelines.runtime.phase_log import mark
from pipelines.runtime.system_metrics import SystemMetrics


def _gather(acc):
    """Combine accumulators from all workers (exact: sums, and all scores for mAP)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return acc
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, acc)
    total = parts[0]  # a copy (unpickled), whatever the accumulator's kind
    for p in parts[1:]:
        total.merge(p)
    return total


def _sum(values: list[float]) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _batches(shard, batch_size: int, device, shuffle: int, seed: int):
    kwargs = {"local_shuffle_buffer_size": shuffle, "local_shuffle_seed": seed} if shuffle else {}
    return shard.iter_torch_batches(batch_size=batch_size, device=device, drop_last=False, **kwargs)


def steps_per_epoch(clips: int, batch_size: int, workers: int, accumulate: int) -> int:
    """Optimizer steps one worker takes per epoch over ``clips`` training clips (the LR schedule's plan;
    the last, partial accumulation of an epoch steps too)."""
    batches = math.ceil(rows_per_worker(max(clips, 1), max(workers, 1)) / batch_size)
    return max(math.ceil(batches / accumulate), 1)


def _run_epoch(model, batches, cfg: ExperimentConfig, device, task: Task, step: TrainStep | None = None,
               num_datasets: int = 0, on_batch=None):
    """One pass of the engine over an epoch's batches: trains with ``step``, else evaluates (views averaged)."""
    result = run_pass(model, batches, task, step=step, device=device, amp=cfg.optim.amp, num_datasets=num_datasets,
                      on_batch=on_batch, max_views=cfg.data.eval_max_views)
    if step is not None:
        step.apply()  # a partial gradient accumulation at the epoch's end still steps
    return result


def train_loop_per_worker(loop_config: dict) -> None:
    """``loop_config``: a ``RunPlan`` as plain data (``RunPlan.to_dict``). What the loop opens (the
    system-metrics sampler) is entered on one ExitStack, closed however the loop ends."""
    with contextlib.ExitStack() as stack:
        WorkerRun(RunPlan.from_dict(loop_config), stack).execute()


@dataclass
class EpochResult:
    """One epoch's outcome as the phases pass it on: its metrics, the gathered accumulators, and this
    worker's skipped-clip counts (per dataset) and fallback-decoder count, before they are summed."""

    metrics: dict
    train_acc: object
    skipped: torch.Tensor
    fallback: int
    val_acc: object = None


class WorkerRun:
    """One worker's share of a run. ``execute`` runs the phases in order; each reads what the earlier
    ones set on ``self``. Every worker takes the same collective steps in the same order (the gathers,
    sums and reports below), so the phases run on every rank; rank 0 alone writes files and logs."""

    def __init__(self, plan: RunPlan, stack: contextlib.ExitStack):
        self.plan, self.cfg, self.stack = plan, plan.config, stack

    def execute(self) -> None:
        self.setup()
        self.start_streams()
        self.build_model()
        self.build_optimizer()
        self.restore()
        self.open_logging()
        self.open_streams()
        if self.start_epoch >= self.cfg.optim.epochs or self.stopper.exhausted():
            self.report_finished()  # resuming a finished (or early-stopped) run
            return
        self.sample_system()
        for epoch in range(self.start_epoch, self.cfg.optim.epochs):
            result = self.train_epoch(epoch)
            self.validate(result)
            self.count_clips(result)
            stop = self.decide_stop(epoch, result)
            self.checkpoint_and_report(epoch, result.metrics)
            if stop:  # [after] the run's closing table says why it stopped
                break
        self.teardown()

    # 1) the worker: logging, threads, device, seed
    def setup(self) -> None:
        import ray.train
        import ray.train.torch

        cfg = self.cfg
        quiet_train_worker(cfg.log.level)
        self.ctx = ray.train.get_context()
        self.rank = self.ctx.get_world_rank()
        if cfg.scaling.torch_threads > 0:
            torch.set_num_threads(cfg.scaling.torch_threads)
        self.device = ray.train.torch.get_device()
        apply_mmap_threshold(cfg.scaling.host_mmap_mib, cfg.model.grad_checkpointing, self.device)
        torch.manual_seed(cfg.seed)

    # 1b) data first: the training stream asks for its first batch now, so Ray Data's decoder pool starts
    # while the model builds, not after it; a fresh run only (a restored one may have no epoch left). The
    # validation stream is not started early: its pool would compete with the model build for the CPUs
    # and delay the first step (measured: docs/fixed_cost.md).
    def start_streams(self) -> None:
        import ray.train

        cfg, plan = self.cfg, self.plan
        self.train_shard = ray.train.get_dataset_shard("train")
        self.train_stream = _batches(self.train_shard, cfg.data.batch_size, self.device, cfg.data.shuffle_buffer,
                                     cfg.seed)
        if ray.train.get_checkpoint() is None and not plan.resume_from:
            self.train_stream = EarlyStart(self.train_stream)

    # 2) the model, wrapped by Ray Train for data-parallel training
    def build_model(self) -> None:
        import ray.train.torch

        cfg, plan = self.cfg, self.plan
        self.task = model_task(cfg.model)
        self.model_config = to_dict(cfg.model)
        model = build_model(cfg.model, plan.num_outputs, plan.class_names)
        mark("model_built")
        self.counts = accounting(model)  # GFLOPs per clip and trainable parameters, logged with every epoch
        self.model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})

    # 3) the optimizer, its schedule, the train step and early stopping
    def build_optimizer(self) -> None:
        cfg, plan, ctx, rank = self.cfg, self.plan, self.ctx, self.rank
        o = cfg.optim
        # drop-path, mixup, EMA (all off by default)
        self.regs = WorkerRegularisers(cfg, unwrap(self.model), plan.num_outputs, rank)
        global_batch = cfg.data.batch_size * o.accumulate * ctx.get_world_size()
        self.optimizer, lr = optimizer_for(unwrap(self.model), o, global_batch)  # lr scaled by optim.lr_base_batch
        if rank == 0 and o.lr_base_batch and cfg.log.level != "quiet":
            say(f"[vidpeft] lr {lr:.3g} = optim.lr {o.lr:g} x global batch {global_batch} / optim.lr_base_batch {o.lr_base_batch}")
        self.batches_per_epoch = steps_per_epoch(plan.train_clips, cfg.data.batch_size, ctx.get_world_size(), 1)
        self.per_epoch = per_epoch = math.ceil(self.batches_per_epoch / o.accumulate)  # optimizer steps: the LR schedule is per step
        self.scheduler = make_scheduler(self.optimizer, per_epoch * o.epochs, per_epoch * o.warmup_epochs,
                                        o.min_lr_ratio)
        self.step = TrainStep(self.model, self.optimizer, self.device, amp=o.amp, grad_clip=o.grad_clip,
                              accumulate=o.accumulate, scheduler=self.scheduler, transform=self.regs.transform,
                              ema=self.regs.ema)
        # [after] early stopping: every worker sees the same gathered metrics, so all stop at the same epoch
        self.stopper = Patience(plan.checkpoint_metric, plan.checkpoint_mode, cfg.optim.patience)
        # mid-epoch checkpoints (checkpoint.every_steps/every_minutes) with the stream's position
        self.mid = MidEpoch(cfg.checkpoint.every_steps, cfg.checkpoint.every_minutes, plan.mid_epoch,
                            fault_hook.clip_logger(plan.fault))

    # 4) resume: Ray's checkpoint (worker restart or --resume) carries weights, optimizer, schedule
    def restore(self) -> None:
        import ray.train

        plan, cfg = self.plan, self.cfg
        self.start_epoch, self.skipped_total, self.fallback_total = 0, 0, 0
        self.state = None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None and plan.resume_from:
            checkpoint = ray.train.Checkpoint(plan.resume_from)  # a local dir or a storage URI
        self.checkpoint = checkpoint = newer_in_storage(checkpoint, plan.storage)
        if checkpoint:
            with checkpoint.as_directory() as d:
                state = restore_checkpoint(Path(d), self.model, self.optimizer, self.scheduler, self.model_config,
                                           self.step.scaler)
                self.regs.restore(Path(d))
                position = Path(d) / POSITION  # a mid-epoch checkpoint: the pairs of its epoch already trained
                self.mid.restore(state, torch.load(position, weights_only=True).numpy() if position.exists() else None)
            self.state = state
            self.start_epoch, self.skipped_total = state["epoch"] + 1, state.get("skipped_total", 0)
            self.fallback_total = state.get("fallback_total", 0)
            self.stopper.restore(state.get("patience"))  # [after]
            self.step.updates = self.start_epoch * self.per_epoch + self.mid.steps_before  # the run's steps (MLflow step_*)
            if self.rank == 0 and cfg.log.level != "quiet" and state.get(MID_EPOCH):
                say(f"[vidpeft] resumed in epoch {self.start_epoch + 1}/{cfg.optim.epochs} after "
                    f"{state[MID_EPOCH]['clips']} of its clips (a mid-epoch checkpoint)")
            elif self.rank == 0 and cfg.log.level != "quiet":
                say(f"[vidpeft] resumed after epoch {state['epoch'] + 1}/{cfg.optim.epochs} (its checkpoint)")
            if self.rank == 0 and cfg.log.level != "quiet" and state.get("schedule_steps"):
                was, now = state["schedule_steps"]
                say(f"[vidpeft] the lr schedule now spans {now} steps, not the checkpoint's {was} (optim.epochs or "
                    f"the batch changed): lr resumes at {self.optimizer.param_groups[0]['lr']:.2e} on the new curve")

    # 5) logging: the driver's live board, MLflow (rank 0 into the driver's run), the health checks
    def open_logging(self) -> None:
        from pipelines.runtime import tracking

        plan = self.plan
        self.uri, self.run_id = plan.tracking_uri, plan.run_id
        self.post = board_poster(plan.progress_board) if self.rank == 0 else None  # the driver draws a live bar
        self.log_to_mlflow = self.rank == 0 and self.uri and self.run_id
        self.logged_steps = 0
        self.last_metrics = self.state["metrics"] if self.checkpoint else {}  # what a mid-epoch checkpoint carries
        if self.checkpoint and self.log_to_mlflow:  # an epoch redone after a restart logs its points once (see below)
            self.logged_steps = tracking.log_epoch_once(self.uri, self.run_id, self.state["metrics"],
                                                        self.state["epoch"])
        self.health = RunHealth(self.cfg, self.model, self.step, self.task.kind, plan.num_outputs,
                                uri=self.uri if self.log_to_mlflow else None, run_id=self.run_id)

    def show(self, line: str) -> None:
        """A line that stays (through the driver's board when it draws a bar)."""
        if self.post is not None:
            self.post(LINE, line)
        else:
            say(line)

    # 6) data: the training stream holds every epoch still to run; each epoch is this worker's equal share
    def open_streams(self) -> None:
        import ray.train

        cfg, plan, device = self.cfg, self.plan, self.device
        self.worker_rows = rows_per_worker(plan.train_clips, self.ctx.get_world_size())
        self.resumed_rows = self.mid.first_rows(plan.train_clips, self.ctx.get_world_size())  # an interrupted epoch's rest
        self.train_epochs = split_epochs(self.train_stream, self.worker_rows, cfg.data.batch_size,
                                         first_rows=self.resumed_rows)
        self.val_shard = ray.train.get_dataset_shard("val") if plan.has_val else None
        self.val_epochs = None
        if self.val_shard is not None and plan.val_stream:  # one worker: the whole stream is this worker's
            self.val_epochs = split_epochs(_batches(self.val_shard, cfg.data.eval_batch_size, device, 0, 0),
                                           plan.val_clips, cfg.data.eval_batch_size)
        self.names = plan.metric_names
        self.dataset_names = plan.dataset_names

    # a resumed run that has nothing left to train: report its final state again
    def report_finished(self) -> None:
        self._report(self.state, self.state["metrics"])

    # 7) system metrics, sampled by each node's first worker for the epochs
    def sample_system(self) -> None:
        ctx = self.ctx
        nodes = ctx.get_world_size() // max(ctx.get_local_world_size(), 1)
        self.stack.enter_context(SystemMetrics(self.uri, self.run_id, self.cfg.log.system_metrics_seconds,
                                               node=f"node{ctx.get_node_rank()}" if nodes > 1 else None,
                                               enabled=self.cfg.log.system_metrics and ctx.get_local_rank() == 0))

    # 8) an epoch: train on this worker's share, combine the counts and scores of all workers
    def train_epoch(self, epoch: int) -> EpochResult:
        from pipelines.runtime import tracking

        cfg = self.cfg
        lr = self.optimizer.param_groups[0]["lr"]
        rows = self.resumed_rows if epoch == self.start_epoch and self.resumed_rows is not None else self.worker_rows
        self.mid.start(epoch, rows, cfg.data.batch_size, self.step.updates)
        watch = StepWatch(cfg, f"epoch {epoch + 1}/{cfg.optim.epochs}", math.ceil(rows / cfg.data.batch_size),
                          self.step, self.device, enabled=self.rank == 0,
                          log=tracking.log_metrics if self.log_to_mlflow else None,
                          uri=self.uri, run_id=self.run_id, post=self.post, logged_before=self.logged_steps)

        def after_batch(clips: int, loss: float | None) -> None:
            watch(clips, loss)
            if self.mid.due(self.step):
                self.save_mid_epoch(epoch)

        on_batch = fault_hook.on_batch(self.plan.fault, epoch, after_batch) if self.rank == 0 else after_batch
        train = _run_epoch(self.model, self.mid.record(next(self.train_epochs)), cfg, self.device, self.task,
                           self.step, len(self.dataset_names), on_batch)
        watch.close()
        seen, secs = _sum([train.clips, train.seconds])
        train_acc = _gather(train.acc)
        metrics = {f"train_{k}": v for k, v in train_acc.compute(self.names).items()}
        metrics.update(epoch=epoch, lr=lr, clips_per_sec=seen / max(secs / self.ctx.get_world_size(), 1e-9))
        return EpochResult(metrics, train_acc, train.skipped, train.fallback)

    # 9) validate (with the EMA weights, when optim.ema_decay is on)
    def validate(self, result: EpochResult) -> None:
        if self.val_shard is None:
            return
        cfg = self.cfg
        val_batches = (next(self.val_epochs) if self.val_epochs is not None
                       else _batches(self.val_shard, cfg.data.eval_batch_size, self.device, 0, 0))
        with self.regs.evaluated():
            val = _run_epoch(self.model, val_batches, cfg, self.device, self.task,
                             num_datasets=len(self.dataset_names))
        result.skipped, result.fallback = result.skipped + val.skipped, result.fallback + val.fallback
        result.val_acc = _gather(val.acc)
        result.metrics.update({f"val_{k}": v for k, v in result.val_acc.compute(self.names).items()})

    # 10) the clips skipped (per dataset) and read by the fallback decoder, summed over workers
    def count_clips(self, result: EpochResult) -> None:
        cfg, metrics = self.cfg, result.metrics
        per_dataset = [int(v) for v in _sum(result.skipped.tolist())]  # summed over workers
        self.skipped_total += sum(per_dataset)
        metrics.update(skipped_clips=sum(per_dataset), skipped_clips_total=self.skipped_total, **self.counts)
        if cfg.data.decoder_fallback not in ("", cfg.data.decoder):  # clips read by the fallback decoder
            fallback = int(_sum([result.fallback])[0])  # summed over workers
            self.fallback_total += fallback
            metrics.update(fallback_clips=fallback, fallback_clips_total=self.fallback_total)
        if len(self.dataset_names) > 1:  # one dataset: the plain count says it all
            metrics.update({f"skipped_clips_{n}": v for n, v in zip(self.dataset_names, per_dataset)})

    # 11) health checks and early stopping: a reason to stop, or None
    def decide_stop(self, epoch: int, result: EpochResult):
        unhealthy = self.health.check(result.metrics, result.train_acc, result.val_acc)  # said after the epoch's line
        stop = self.stopper.update(epoch, result.metrics) or unhealthy  # [after]
        if stop:
            result.metrics["stop_reason"] = stop
        return stop

    # 12) checkpoint + report (all workers report; only rank 0 attaches files)
    def checkpoint_and_report(self, epoch: int, metrics: dict) -> None:
        from pipelines.runtime import tracking

        state = {"epoch": epoch, "skipped_total": self.skipped_total, "fallback_total": self.fallback_total,
                 "metrics": metrics,
                 "patience": self.stopper.state()}
        self._report(state, metrics, epoch)
        self.last_metrics = metrics
        self.mid.saved()
        # logged once the epoch's checkpoint is kept: a worker lost before this point redoes the epoch
        # and its metrics are logged for the first time then (not a second point at the same step); lost
        # after it, the restart logs them from the checkpoint (tracking.log_epoch_once)
        if self.log_to_mlflow:
            tracking.log_metrics(self.uri, self.run_id, metrics, step=epoch)

    def _report(self, state: dict, metrics: dict, epoch: int | None = None) -> None:
        """Report ``metrics`` to Ray Train from every worker; rank 0 attaches a checkpoint of ``state``
        (and, for a trained epoch, says its line and reaches the fault hook's "before_report")."""
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if self.rank == 0:
                ckpt = self._save(tmp, state)
                if epoch is not None:
                    if self.cfg.log.level != "quiet":
                        self.show(epoch_line(epoch, self.cfg.optim.epochs, metrics))
                        for line in self.health.lines:
                            self.show(line)
                    fault_hook.reached(self.plan.fault, "before_report", epoch)
            ray.train.report(metrics, checkpoint=ckpt)

    def _save(self, tmp: str, state: dict, files: dict | None = None):
        """Rank 0: the checkpoint dir (the trained weights beside the EMA; the weights file: EMA)."""
        import ray.train

        extra = {**self.regs.checkpoint_files(), **(files or {})}
        with self.regs.evaluated():
            save_checkpoint(Path(tmp), self.model, self.optimizer, self.scheduler, state, self.model_config,
                            self.step.scaler, extra)
        return ray.train.Checkpoint.from_directory(tmp)

    # 12b) a mid-epoch checkpoint with the stream's position: every worker reports it; its metrics rank it
    # below any epoch's (NaN), so it is never a run's best and goes first when checkpoint.keep is reached
    def save_mid_epoch(self, epoch: int) -> None:
        import ray.train

        pairs = self.mid.position()  # a collective: every rank
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if self.rank == 0:
                ckpt = self._save(tmp, {"epoch": epoch - 1, "skipped_total": self.skipped_total,
                                        "fallback_total": self.fallback_total, "metrics": self.last_metrics,
                                        "patience": self.stopper.state(),
                                        MID_EPOCH: self.mid.state(pairs, self.step.updates)}, self.mid.files(pairs))
            reported = {"epoch": epoch - 1, "mid_epoch_clips": len(pairs)}
            if self.plan.checkpoint_metric:
                reported[self.plan.checkpoint_metric] = float("nan")
            ray.train.report(reported, checkpoint=ckpt)
        self.mid.saved()

    # 13) teardown: the system-metrics sampler closes with the ExitStack
    def teardown(self) -> None:
        if self.rank == 0 and os.environ.get("VIDPEFT_DEBUG"):
            print("[vidpeft] worker done", flush=True)
