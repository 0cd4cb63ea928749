"""The per-worker training loop run by Ray Train (one copy per worker).

Steps: 1) rebuild config and model, 2) restore from a checkpoint if there is one, 3) per epoch:
train on this worker's shard, evaluate, combine metrics across workers, 4) rank 0 writes the
checkpoint and logs to MLflow; every worker reports the same number of times.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from components.checkpoint import load_weights, save_weights, trainable_state_dict
from components.config import from_dict, to_dict
from components.flops import accounting
from components.model import build_model
from components.multihead.metrics import DatasetMetrics
from components.tasks import MetricAccumulator
from pipelines.checkpoint_digest import file_digests
from pipelines.config import ExperimentConfig
from pipelines.eval_views import ViewAveraged

WEIGHTS = "weights.safetensors"
STATE = "state.json"


def lr_lambda(epochs: int, warmup: int, min_ratio: float):
    """Per-epoch multiplier: linear warm-up, then cosine down to ``min_ratio``."""

    def f(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(epochs - warmup, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def autocast_for(device: torch.device, amp: str):
    if amp == "off" or (amp == "auto" and (device.type != "cuda" or not torch.cuda.is_bf16_supported())):
        return nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(params, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all tensors) where PyTorch has it for the parameters' device:
    on CPU it took ViT-B's optimizer step from 1.2-2.2 to 0.2-0.7 CPU s (benchmarks/README.md)."""
    kwargs = dict(lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a dtype/device without a fused kernel
        return torch.optim.AdamW(params, **kwargs)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _gather(acc: MetricAccumulator) -> MetricAccumulator:
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


def _run_epoch(model, shard, cfg: ExperimentConfig, device, task, num_outputs, optimizer=None, epoch: int = 0,
               num_datasets: int = 0):
    """One pass over a shard; returns (metric accumulator, clips seen, skipped per dataset, seconds)."""
    training = optimizer is not None
    model.train(training)
    acc = DatasetMetrics(cfg.model.heads) if cfg.model.heads else MetricAccumulator(task, num_outputs)
    seen = 0
    skipped = torch.zeros(max(num_datasets, 1), dtype=torch.long)
    start = time.perf_counter()
    bs = cfg.data.batch_size if training else cfg.data.eval_batch_size
    shuffle = cfg.data.shuffle_buffer if training else 0
    params = [p for p in model.parameters() if p.requires_grad]
    for batch in _batches(shard, bs, device, shuffle, cfg.seed + epoch):
        ok = batch.pop("ok").bool()
        dataset_index = batch.get("dataset_index")  # stays in the batch: routes clips to heads (model.heads)
        n_ok = int(ok.sum())
        if dataset_index is not None:
            skipped += torch.bincount(dataset_index[~ok].long().cpu(), minlength=len(skipped))
        else:
            skipped[0] += int(ok.numel() - n_ok)
        seen += n_ok
        if n_ok > 0:
            batch = {k: v[ok] for k, v in batch.items()}
        with torch.set_grad_enabled(training), autocast_for(device, cfg.optim.amp):
            # evaluation with several views per video: (B, V, ...) flattened in, scores averaged out
            out = model(batch) if training else ViewAveraged(model, task)(batch)
            # A batch of only unreadable clips still runs forward/backward (scaled to zero) so
            # data-parallel workers stay in step; it contributes nothing.
            loss = out["loss"] if n_ok > 0 else out["loss"] * 0.0
        if training and params:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            optimizer.step()
        if n_ok > 0:
            if cfg.model.heads:  # metrics per dataset
                acc.route(batch["dataset_index"])
            acc.update(out["logits"].float(), batch["target"], loss.item())
            for k, v in out.items():  # multi-task models report their loss terms as "loss/<name>"
                if k.startswith("loss/"):
                    acc.add_part(k.removeprefix("loss/"), float(v), n_ok)
    return acc, seen, skipped, time.perf_counter() - start


def _save_checkpoint(directory: Path, model, optimizer, scheduler, state: dict, model_config: dict) -> None:
    """Write a checkpoint dir whose state.json, written last and atomically, lists every file's size.

    A kill mid-save (or a copy to storage cut short, in whatever order Ray copies the files) leaves a
    dir that `checkpoint_complete` rejects, so the previous checkpoint stays the one resumed from.
    """
    save_weights(directory / WEIGHTS, trainable_state_dict(_unwrap(model)), model_config)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    names = [WEIGHTS, "optimizer.pt", "scheduler.pt"]
    files = {name: (directory / name).stat().st_size for name in names}
    tmp = directory / (STATE + ".tmp")
    tmp.write_text(json.dumps({**state, "files": files, "sha256": file_digests(directory, names)}, indent=2))
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
    num_outputs = loop_config["num_outputs"]
    task = cfg.model.head.task
    model_config = to_dict(cfg.model)
    model = build_model(cfg.model, num_outputs, loop_config.get("class_names"))
    counts = accounting(model)  # GFLOPs per clip and trainable parameters, logged with every epoch
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    device = ray.train.torch.get_device()
    inner = _unwrap(model)
    groups = inner.param_groups(cfg.optim.lr) if hasattr(inner, "param_groups") else None
    params = groups or [p for p in model.parameters() if p.requires_grad]
    if not params:  # e.g. a frozen zero-shot baseline: epochs only evaluate
        params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = make_optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.epochs, cfg.optim.warmup_epochs, cfg.optim.min_lr_ratio)
    )

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
        acc, seen, skipped, secs = _run_epoch(model, train_shard, cfg, device, task, num_outputs, optimizer, epoch,
                                              len(dataset_names))
        scheduler.step()
        seen, secs = _sum([seen, secs])
        metrics = {f"train_{k}": v for k, v in _gather(acc).compute(names).items()}
        metrics.update(epoch=epoch, lr=lr, clips_per_sec=seen / max(secs / ctx.get_world_size(), 1e-9))
        if val_shard is not None:
            vacc, _, vskipped, _ = _run_epoch(model, val_shard, cfg, device, task, num_outputs,
                                              num_datasets=len(dataset_names))
            skipped += vskipped
            metrics.update({f"val_{k}": v for k, v in _gather(vacc).compute(names).items()})
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
