"""One pass over batches, training or evaluating: the only batch loop in vidpeft.

``run_pass`` drops the clips the decoder could not read (``ok`` false; counted per dataset when the
batch has a ``dataset_index``), runs a ``TrainStep`` on each batch when one is given, else evaluates
(no grad, autocast, several views per video averaged by the Task), and feeds a metric accumulator.
``evaluate`` is the public evaluation verb: any iterable of batch dicts (a Ray Data iterator or a
plain list) in, an ``EvalResult`` out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from components.engine.precision import autocast_for
from components.engine.step import TrainStep
from components.engine.views import chunked_forward, flatten_views
from components.tasks import Task


@dataclass
class PassResult:
    """What one pass saw: its accumulator (not yet computed, so workers can merge it first)."""

    acc: object  # the Task's accumulator (MetricAccumulator or HeadsAccumulator)
    clips: int = 0  # readable clips (videos) seen
    skipped: torch.Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.long))  # per dataset
    fallback: int = 0  # clips read by the fallback decoder (a ``fallback`` batch column)
    seconds: float = 0.0
    scores: list[torch.Tensor] = field(default_factory=list)  # per-video scores (keep_scores)
    ids: list = field(default_factory=list)


@dataclass
class EvalResult:
    """``metrics``: the task's metrics (loss, top1 / mAP / mse ...); ``scores``: (N, K) per-video
    probabilities (``Task.probabilities`` of the view-averaged outputs) in ``ids`` order, when asked
    for; ``ids``: each scored video's ``clip_id`` from the batches, else its running index."""

    metrics: dict[str, float]
    scores: torch.Tensor | None
    ids: list
    clips: int
    skipped: int
    fallback: int = 0  # clips read by the fallback decoder
    acc: object = None  # the accumulator behind ``metrics`` (workers' accumulators merge exactly)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _select(batch: dict, ok: torch.Tensor) -> dict:
    keep = ok.nonzero(as_tuple=True)[0].tolist()
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v[ok]
        elif isinstance(v, (list, tuple)) or hasattr(v, "__array__"):
            out[k] = [v[i] for i in keep]
        else:
            out[k] = v
    return out


def run_pass(model: nn.Module, batches: Iterable[dict], task: Task, *, step: TrainStep | None = None,
             device: torch.device | str = "cpu", amp: str = "off", num_datasets: int = 1,
             forward: Callable[[dict], dict] | None = None, keep_scores: bool = False,
             on_batch: Callable[[int, float | None], None] | None = None, max_views: int = 0) -> PassResult:
    """One pass over ``batches``: trains with ``step`` when given, else evaluates (see module doc).

    ``max_views``: evaluation gives the model at most this many views (clips) at a time (0 = a whole
    batch), see ``components.engine.views.chunked_forward``.

    ``on_batch(clips, loss)``: called after every batch (readable clips in it, its loss or None), for
    progress lines and per-step metrics.
    ``forward``: what to call on an evaluation batch instead of ``model`` (e.g. zero-shot scoring); it
    returns at least ``logits``. Multi-task models report named loss terms as ``loss/<name>``.
    """
    training = step is not None
    model.train(training)
    device = torch.device(device)
    acc = task.accumulator()
    result = PassResult(acc, skipped=torch.zeros(max(num_datasets, 1), dtype=torch.long))
    start = time.perf_counter()
    call = forward or model
    for batch in batches:
        batch = _to(batch, device)
        ok = batch.pop("ok").bool() if "ok" in batch else torch.ones(len(batch["video"]), dtype=torch.bool)
        fallback = batch.pop("fallback", None)
        if fallback is not None:
            result.fallback += int(fallback.sum())
        n_ok = int(ok.sum())
        index = batch.get("dataset_index")  # stays in the batch: routes clips to heads
        if index is not None:
            result.skipped += torch.bincount(index[~ok].long().cpu(), minlength=len(result.skipped))
        else:
            result.skipped[0] += int(ok.numel() - n_ok)
        result.clips += n_ok
        if n_ok > 0:
            batch = _select(batch, ok)
        if training:
            out = step(batch, live=n_ok > 0)
        else:
            with torch.no_grad(), autocast_for(device, amp):
                flat, views = flatten_views(batch)
                out = chunked_forward(call, flat, max_views)
                if views > 1:
                    out = {**out, "logits": task.average_views(out["logits"].float(), views)}
        loss = out.get("loss")
        if on_batch is not None:
            on_batch(n_ok, None if loss is None or n_ok == 0 else loss.item())
        if n_ok == 0:
            continue
        if "target" in batch:
            acc.add_batch(out["logits"].float(), batch, None if loss is None else loss.item())
        for k, v in out.items():
            if k.startswith("loss/"):
                acc.add_part(k.removeprefix("loss/"), float(v), n_ok)
        if keep_scores:
            result.scores.append(task.probabilities(out["logits"].detach().float()).cpu())
            ids = batch.get("clip_id")
            result.ids += list(ids) if ids is not None else list(range(len(result.ids), len(result.ids) + n_ok))
    result.seconds = time.perf_counter() - start
    return result


def evaluate(model: nn.Module, batches: Iterable[dict], task: Task, device: torch.device | str = "cpu",
             amp: str = "off", *, names=None, forward: Callable[[dict], dict] | None = None,
             keep_scores: bool = True, num_datasets: int = 1,
             on_batch: Callable[[int, float | None], None] | None = None, max_views: int = 0) -> EvalResult:
    """Evaluate ``model`` on ``batches`` (dicts of ``video`` (B[, V], T, H, W, C), ``target``, optional
    ``ok``, ``clip_id``, side inputs; a Ray Data iterator or a plain list) for ``task``.

    Returns the task's metrics (``names``: per-output names, e.g. regression traits), per-video scores
    and ids. Batches without ``target`` (prediction) give scores only. ``on_batch`` and ``max_views`` as
    in ``run_pass``.
    """
    r = run_pass(model, batches, task, device=device, amp=amp, forward=forward, keep_scores=keep_scores,
                 num_datasets=num_datasets, on_batch=on_batch, max_views=max_views)
    scores = torch.cat(r.scores) if r.scores else None
    return EvalResult(r.acc.compute(names), scores, r.ids, r.clips, int(r.skipped.sum()), r.fallback, r.acc)
