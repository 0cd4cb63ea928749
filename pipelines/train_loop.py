"""The per-worker training loop run by Ray Train (one copy per worker).

Steps: 1) rebuild config and model, 2) restore from a checkpoint if there is one, 3) per epoch:
train on this worker's shard, evaluate, combine metrics across workers, 4) rank 0 writes the
checkpoint and logs to MLflow; every worker reports the same number of times.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from components.checkpoint import load_weights, save_weights, trainable_state_dict
from components.config import from_dict, to_dict
from components.engine import TrainStep, make_optimizer, make_scheduler, run_pass, trainable_groups
from components.flops import accounting
from components.model import build_model
from components.tasks import Task, model_task
from pipelines.config import ExperimentConfig

WEIGHTS = "weights.safetensors"
STATE = "state.json"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


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


def _run_epoch(model, shard, cfg: ExperimentConfig, device, task: Task, step: TrainStep | None = None,
               epoch: int = 0, num_datasets: int = 0):
    """One pass of the engine over a shard: trains with ``step``, else evaluates (views averaged)."""
    training = step is not None
    bs = cfg.data.batch_size if training else cfg.data.eval_batch_size
    shuffle = cfg.data.shuffle_buffer if training else 0
    batches = _batches(shard, bs, device, shuffle, cfg.seed + epoch)
    result = run_pass(model, batches, task, step=step, device=device, amp=cfg.optim.amp, num_datasets=num_datasets)
    if step is not None:
        step.apply()  # a partial gradient accumulation at the epoch's end still steps
    return result


def _save_checkpoint(directory: Path, model, optimizer, scheduler, state: dict, model_config: dict) -> None:
    """Write a checkpoint dir whose state.json, written last and atomically, lists every file's size.

    A kill mid-save (or a copy to storage cut short, in whatever order Ray copies the files) leaves a
    dir that `checkpoint_complete` rejects, so the previous checkpoint stays the one resumed from.
    """
    save_weights(directory / WEIGHTS, trainable_state_dict(_unwrap(model)), model_config)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    files = {name: (directory / name).stat().st_size for name in (WEIGHTS, "optimizer.pt", "scheduler.pt")}
    tmp = directory / (STATE + ".tmp")
    tmp.write_text(json.dumps({**state, "files": files}, indent=2))
    os.replace(tmp, directory / STATE)


def checkpoint_complete(state: dict, sizes: dict[str, int]) -> bool:
    """True when every file that ``state`` (a parsed state.json) lists is present at its recorded size.

    ``sizes``: file name -> size of what the checkpoint dir actually holds. A state.json without a
    file list (older checkpoints) needs the weights file only.
    """
    expected = state.get("files") or {WEIGHTS: None}
    return "epoch" in state and all(
        name in sizes and (size is None or sizes[name] == size) for name, size in expected.items()
    )


def _restore(directory: Path, model, optimizer, scheduler, model_config: dict) -> dict:
    load_weights(_unwrap(model), directory / WEIGHTS, model_config)
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
    return json.loads((directory / STATE).read_text())


def _epoch_of(checkpoint) -> int:
    with checkpoint.filesystem.open_input_stream(checkpoint.path.rstrip("/") + "/" + STATE) as f:
        return json.loads(f.read())["epoch"]


def _newer_in_storage(checkpoint, storage: str | None):
    """The newest complete checkpoint in this run's storage when it is newer than ``checkpoint``.

    A worker reports a checkpoint after copying it to storage, and Ray's controller learns of it only
    at its next poll: a worker that dies in between leaves a complete checkpoint Ray does not hand
    to the restarted workers, whose epoch would then be trained (and logged) again.
    """
    import ray.train

    if not storage:
        return checkpoint
    from pipelines.train import latest_checkpoint  # pipelines.train imports this module

    newest = latest_checkpoint(storage)
    if newest is None:
        return checkpoint
    newest_ckpt = ray.train.Checkpoint(newest)
    if checkpoint is None or _epoch_of(newest_ckpt) > _epoch_of(checkpoint):
        return newest_ckpt
    return checkpoint


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    from pipelines import tracking

    # 1) config and model
    cfg: ExperimentConfig = from_dict(ExperimentConfig, loop_config["config"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    if cfg.scaling.torch_threads > 0:
        torch.set_num_threads(cfg.scaling.torch_threads)
    torch.manual_seed(cfg.seed)
    task = model_task(cfg.model)
    model_config = to_dict(cfg.model)
    model = build_model(cfg.model, loop_config["num_outputs"], loop_config.get("class_names"))
    counts = accounting(model)  # GFLOPs per clip and trainable parameters, logged with every epoch
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    device = ray.train.torch.get_device()
    o = cfg.optim
    optimizer = make_optimizer(trainable_groups(_unwrap(model), o.lr), o.lr, o.weight_decay)
    scheduler = make_scheduler(optimizer, o.epochs, o.warmup_epochs, o.min_lr_ratio)
    step = TrainStep(model, optimizer, device, amp=o.amp, grad_clip=o.grad_clip)

    # 2) resume: Ray's checkpoint (worker restart or --resume) carries weights, optimizer, schedule
    start_epoch, skipped_total = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and loop_config.get("resume_from"):
        checkpoint = ray.train.Checkpoint(loop_config["resume_from"])  # a local dir or a storage URI
    checkpoint = _newer_in_storage(checkpoint, loop_config.get("storage"))
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = _restore(Path(d), model, optimizer, scheduler, model_config)
        start_epoch, skipped_total = state["epoch"] + 1, state.get("skipped_total", 0)
        if rank == 0:
            print(f"[vidpeft] resumed from epoch {state['epoch']} checkpoint", flush=True)

    uri, run_id = loop_config.get("tracking_uri"), loop_config.get("run_id")
    log_to_mlflow = rank == 0 and uri and run_id

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if loop_config.get("has_val") else None
    names = loop_config.get("dataset_target_names") or loop_config.get("target_names")
    dataset_names = loop_config.get("dataset_names") or []

    if start_epoch >= cfg.optim.epochs:  # resuming a finished run: report its final state again
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                _save_checkpoint(Path(tmp), model, optimizer, scheduler, state, model_config)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(state["metrics"], checkpoint=ckpt)
        return

    # 3) epochs
    for epoch in range(start_epoch, cfg.optim.epochs):
        lr = optimizer.param_groups[0]["lr"]
        train = _run_epoch(model, train_shard, cfg, device, task, step, epoch, len(dataset_names))
        scheduler.step()
        skipped = train.skipped
        seen, secs = _sum([train.clips, train.seconds])
        metrics = {f"train_{k}": v for k, v in _gather(train.acc).compute(names).items()}
        metrics.update(epoch=epoch, lr=lr, clips_per_sec=seen / max(secs / ctx.get_world_size(), 1e-9))
        if val_shard is not None:
            val = _run_epoch(model, val_shard, cfg, device, task, num_datasets=len(dataset_names))
            skipped = skipped + val.skipped
            metrics.update({f"val_{k}": v for k, v in _gather(val.acc).compute(names).items()})
        per_dataset = [int(v) for v in _sum(skipped.tolist())]  # summed over workers
        skipped_total += sum(per_dataset)
        metrics.update(skipped_clips=sum(per_dataset), skipped_clips_total=skipped_total, **counts)
        if len(dataset_names) > 1:  # one dataset: the plain count says it all
            metrics.update({f"skipped_clips_{n}": v for n, v in zip(dataset_names, per_dataset)})

        # 4) checkpoint + report (all workers report; only rank 0 attaches files)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                state = {"epoch": epoch, "skipped_total": skipped_total, "metrics": metrics}
                _save_checkpoint(Path(tmp), model, optimizer, scheduler, state, model_config)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
                if log_to_mlflow:
                    tracking.log_metrics(uri, run_id, metrics, step=epoch)
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
                print(f"[vidpeft] epoch {epoch + 1}/{cfg.optim.epochs} {shown}", flush=True)
            ray.train.report(metrics, checkpoint=ckpt)
    if rank == 0 and os.environ.get("VIDPEFT_DEBUG"):
        print("[vidpeft] worker done", flush=True)
