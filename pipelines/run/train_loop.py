"""The per-worker training loop run by Ray Train (one copy per worker).

Steps: 1) rebuild config and model, 2) restore from a checkpoint if there is one, 3) per epoch:
train on this worker's shard, evaluate, combine metrics across workers, 4) rank 0 writes the
checkpoint and logs to MLflow; every worker reports the same number of times.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
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
from pipelines.data.epoch_stream import rows_per_worker, split_epochs
from pipelines.run.plan import RunPlan
from pipelines.run.progress import epoch_line, say
from pipelines.run.progress_relay import LINE, board_poster
from pipelines.run.regularisers import WorkerRegularisers
from pipelines.runtime.ray_env import quiet_train_worker
from pipelines.run.step_watch import StepWatch
from pipelines.run.stream_position import POSITION, MidEpoch
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
        _train(loop_config, stack)


def _train(loop_config: dict, stack: contextlib.ExitStack) -> None:
    import ray.train
    import ray.train.torch

    from pipelines.runtime import tracking

    # 1) config and model
    plan = RunPlan.from_dict(loop_config)
    cfg = plan.config
    quiet_train_worker(cfg.log.level)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    if cfg.scaling.torch_threads > 0:
        torch.set_num_threads(cfg.scaling.torch_threads)
    device = ray.train.torch.get_device()
    apply_mmap_threshold(cfg.scaling.host_mmap_mib, cfg.model.grad_checkpointing, device)
    torch.manual_seed(cfg.seed)
    task = model_task(cfg.model)
    model_config = to_dict(cfg.model)
    model = build_model(cfg.model, plan.num_outputs, plan.class_names)
    counts = accounting(model)  # GFLOPs per clip and trainable parameters, logged with every epoch
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    o = cfg.optim
    regs = WorkerRegularisers(cfg, unwrap(model), plan.num_outputs, rank)  # drop-path, mixup, EMA (all off by default)
    global_batch = cfg.data.batch_size * o.accumulate * ctx.get_world_size()
    optimizer, lr = optimizer_for(unwrap(model), o, global_batch)  # lr scaled by optim.lr_base_batch
    if rank == 0 and o.lr_base_batch and cfg.log.level != "quiet":
        say(f"[vidpeft] lr {lr:.3g} = optim.lr {o.lr:g} x global batch {global_batch} / optim.lr_base_batch {o.lr_base_batch}")
    batches_per_epoch = steps_per_epoch(plan.train_clips, cfg.data.batch_size, ctx.get_world_size(), 1)
    per_epoch = math.ceil(batches_per_epoch / o.accumulate)  # optimizer steps: the LR schedule is per step
    scheduler = make_scheduler(optimizer, per_epoch * o.epochs, per_epoch * o.warmup_epochs, o.min_lr_ratio)
    step = TrainStep(model, optimizer, device, amp=o.amp, grad_clip=o.grad_clip, accumulate=o.accumulate,
                     scheduler=scheduler, transform=regs.transform, ema=regs.ema)

    # [after] early stopping: every worker sees the same gathered metrics, so all stop at the same epoch
    stopper = Patience(plan.checkpoint_metric, plan.checkpoint_mode, cfg.optim.patience)
    # mid-epoch checkpoints (checkpoint.every_steps/every_minutes) with the stream's position
    mid = MidEpoch(cfg.checkpoint.every_steps, cfg.checkpoint.every_minutes, plan.mid_epoch,
                   fault_hook.clip_logger(plan.fault))

    # 2) resume: Ray's checkpoint (worker restart or --resume) carries weights, optimizer, schedule
    start_epoch, skipped_total, fallback_total = 0, 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and plan.resume_from:
        checkpoint = ray.train.Checkpoint(plan.resume_from)  # a local dir or a storage URI
    checkpoint = newer_in_storage(checkpoint, plan.storage)
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = restore_checkpoint(Path(d), model, optimizer, scheduler, model_config, step.scaler)
            regs.restore(Path(d))
            position = Path(d) / POSITION  # a mid-epoch checkpoint: the pairs of its epoch already trained
            mid.restore(state, torch.load(position, weights_only=True).numpy() if position.exists() else None)
        start_epoch, skipped_total = state["epoch"] + 1, state.get("skipped_total", 0)
        fallback_total = state.get("fallback_total", 0)
        stopper.restore(state.get("patience"))  # [after]
        step.updates = start_epoch * per_epoch + mid.steps_before  # the run's optimizer steps (MLflow step_*)
        if rank == 0 and cfg.log.level != "quiet" and state.get(MID_EPOCH):
            say(f"[vidpeft] resumed in epoch {start_epoch + 1}/{cfg.optim.epochs} after "
                f"{state[MID_EPOCH]['clips']} of its clips (a mid-epoch checkpoint)")
        elif rank == 0 and cfg.log.level != "quiet":
            say(f"[vidpeft] resumed after epoch {state['epoch'] + 1}/{cfg.optim.epochs} (its checkpoint)")

    uri, run_id = plan.tracking_uri, plan.run_id
    post = board_poster(plan.progress_board) if rank == 0 else None  # the driver draws a live bar

    def show(line: str) -> None:  # a line that stays (through the driver's board when it draws a bar)
        if post is not None:
            post(LINE, line)
        else:
            say(line)

    log_to_mlflow = rank == 0 and uri and run_id
    logged_steps = 0
    if checkpoint and log_to_mlflow:  # an epoch redone after a restart logs its points once (see below)
        logged_steps = tracking.log_epoch_once(uri, run_id, state["metrics"], state["epoch"])
    health = RunHealth(cfg, model, step, task.kind, plan.num_outputs, uri=uri if log_to_mlflow else None,
                       run_id=run_id)

    # The training stream holds every epoch still to run; each epoch is this worker's equal share
    train_shard = ray.train.get_dataset_shard("train")
    worker_rows = rows_per_worker(plan.train_clips, ctx.get_world_size())
    resumed_rows = mid.first_rows(plan.train_clips, ctx.get_world_size())  # the rest of an interrupted epoch
    train_epochs = split_epochs(_batches(train_shard, cfg.data.batch_size, device, cfg.data.shuffle_buffer, cfg.seed),
                                worker_rows, cfg.data.batch_size, first_rows=resumed_rows)
    val_shard = ray.train.get_dataset_shard("val") if plan.has_val else None
    val_epochs = None
    if val_shard is not None and plan.val_stream:  # one worker: the whole stream is this worker's
        val_epochs = split_epochs(_batches(val_shard, cfg.data.eval_batch_size, device, 0, 0), plan.val_clips,
                                  cfg.data.eval_batch_size)
    names = plan.metric_names
    dataset_names = plan.dataset_names

    def save(tmp: str, state: dict, files: dict | None = None):
        """Rank 0: the checkpoint dir (the trained weights beside the EMA; the weights file: EMA)."""
        extra = {**regs.checkpoint_files(), **(files or {})}
        with regs.evaluated():
            save_checkpoint(Path(tmp), model, optimizer, scheduler, state, model_config, step.scaler, extra)
        return ray.train.Checkpoint.from_directory(tmp)

    last_metrics = state["metrics"] if checkpoint else {}

    def save_mid_epoch(epoch: int) -> None:
        """A mid-epoch checkpoint: every worker reports it; its metrics rank it below any epoch's (NaN)."""
        pairs = mid.position()  # a collective: every rank
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                ckpt = save(tmp, {"epoch": epoch - 1, "skipped_total": skipped_total, "fallback_total": fallback_total,
                                  "metrics": last_metrics, "patience": stopper.state(),
                                  MID_EPOCH: mid.state(pairs, step.updates)}, mid.files(pairs))
            reported = {"epoch": epoch - 1, "mid_epoch_clips": len(pairs)}
            if plan.checkpoint_metric:
                reported[plan.checkpoint_metric] = float("nan")
            ray.train.report(reported, checkpoint=ckpt)
        mid.saved()

    # resuming a finished (or early-stopped) run: report its final state again
    if start_epoch >= cfg.optim.epochs or stopper.exhausted():
        with tempfile.TemporaryDirectory() as tmp:
            ray.train.report(state["metrics"], checkpoint=save(tmp, state) if rank == 0 else None)
        return

    # 3) epochs, with system metrics sampled by each node's first worker
    nodes = ctx.get_world_size() // max(ctx.get_local_world_size(), 1)
    stack.enter_context(SystemMetrics(uri, run_id, cfg.log.system_metrics_seconds,
                                      node=f"node{ctx.get_node_rank()}" if nodes > 1 else None,
                                      enabled=cfg.log.system_metrics and ctx.get_local_rank() == 0))
    for epoch in range(start_epoch, cfg.optim.epochs):
        lr = optimizer.param_groups[0]["lr"]
        rows = resumed_rows if epoch == start_epoch and resumed_rows is not None else worker_rows
        mid.start(epoch, rows, cfg.data.batch_size, step.updates)
        watch = StepWatch(cfg, f"epoch {epoch + 1}/{cfg.optim.epochs}", math.ceil(rows / cfg.data.batch_size), step,
                          device, enabled=rank == 0, log=tracking.log_metrics if log_to_mlflow else None,
                          uri=uri, run_id=run_id, post=post, logged_before=logged_steps)

        def after_batch(clips: int, loss: float | None, epoch=epoch, watch=watch) -> None:
            watch(clips, loss)
            if mid.due(step):
                save_mid_epoch(epoch)

        on_batch = fault_hook.on_batch(plan.fault, epoch, after_batch) if rank == 0 else after_batch
        train = _run_epoch(model, mid.record(next(train_epochs)), cfg, device, task, step, len(dataset_names),
                           on_batch)
        watch.close()
        skipped, fallback = train.skipped, train.fallback
        seen, secs = _sum([train.clips, train.seconds])
        train_acc = _gather(train.acc)
        metrics = {f"train_{k}": v for k, v in train_acc.compute(names).items()}
        metrics.update(epoch=epoch, lr=lr, clips_per_sec=seen / max(secs / ctx.get_world_size(), 1e-9))
        val_acc = None
        if val_shard is not None:
            val_batches = (next(val_epochs) if val_epochs is not None
                           else _batches(val_shard, cfg.data.eval_batch_size, device, 0, 0))
            with regs.evaluated():  # the EMA weights, when optim.ema_decay is on
                val = _run_epoch(model, val_batches, cfg, device, task, num_datasets=len(dataset_names))
            skipped, fallback = skipped + val.skipped, fallback + val.fallback
            val_acc = _gather(val.acc)
            metrics.update({f"val_{k}": v for k, v in val_acc.compute(names).items()})
        per_dataset = [int(v) for v in _sum(skipped.tolist())]  # summed over workers
        skipped_total += sum(per_dataset)
        metrics.update(skipped_clips=sum(per_dataset), skipped_clips_total=skipped_total, **counts)
        if cfg.data.decoder_fallback not in ("", cfg.data.decoder):  # clips read by the fallback decoder
            fallback = int(_sum([fallback])[0])  # summed over workers
            fallback_total += fallback
            metrics.update(fallback_clips=fallback, fallback_clips_total=fallback_total)
        if len(dataset_names) > 1:  # one dataset: the plain count says it all
            metrics.update({f"skipped_clips_{n}": v for n, v in zip(dataset_names, per_dataset)})

        unhealthy = health.check(metrics, train_acc, val_acc)  # its lines are said after the epoch's
        stop = stopper.update(epoch, metrics) or unhealthy  # [after] a reason to stop early, or None
        if stop:
            metrics["stop_reason"] = stop

        # 4) checkpoint + report (all workers report; only rank 0 attaches files)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                ckpt = save(tmp, {"epoch": epoch, "skipped_total": skipped_total, "fallback_total": fallback_total,
                                  "metrics": metrics, "patience": stopper.state()})
                if cfg.log.level != "quiet":
                    show(epoch_line(epoch, cfg.optim.epochs, metrics))
                    for line in health.lines:
                        show(line)
                fault_hook.reached(plan.fault, "before_report", epoch)
            ray.train.report(metrics, checkpoint=ckpt)
            last_metrics = metrics
            mid.saved()
            # logged once the epoch's checkpoint is kept: a worker lost before this point redoes the epoch
            # and its metrics are logged for the first time then (not a second point at the same step); lost
            # after it, the restart logs them from the checkpoint (tracking.log_epoch_once)
            if log_to_mlflow:
                tracking.log_metrics(uri, run_id, metrics, step=epoch)
        if stop:  # [after] the run's closing table says why it stopped
            break
    if rank == 0 and os.environ.get("VIDPEFT_DEBUG"):
        print("[vidpeft] worker done", flush=True)
