"""Several views per video at evaluation: flatten them into the batch, average their scores after.

With clips x crops > 1 views, a batch's ``video`` is (B, V, T, H, W, C) (side inputs, targets and
masks stay one per video). Before the model the views are flattened into the batch (B*V clips,
other tensors repeated per view); after it each video's V outputs become one score with the Task's
``average_views`` (softmax / sigmoid probabilities, regression values, averaged), so metrics are
computed per video. The loss stays the model's own loss, averaged over all views.

``chunked_forward`` bounds the memory of many views (long videos, 4 clips x 3 crops): the flattened
batch goes through the model at most ``max_views`` clips at a time (MMAction2's ``max_testing_views``),
per-clip outputs are concatenated and scalar outputs (losses) averaged weighted by the chunks' sizes,
so scores are the same as in one call (a loss that couples the clips of a batch, e.g. a contrastive
term, is the exception: it is then the chunks' mean).
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat

from components.tasks import Task, make_task


def flatten_views(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """A batch whose video is (B, V, T, H, W, C) -> (B*V, T, H, W, C), every other tensor with B rows
    (side features, masks, targets) repeated V times per video, views of a video consecutive; and V.
    A (B, T, H, W, C) batch comes back as it is, with V = 1."""
    video = batch["video"]
    if video.ndim != 6:
        return batch, 1
    b, v = video.shape[:2]
    flat = {}
    for key, value in batch.items():
        if key == "video":
            flat[key] = rearrange(value, "b v t h w c -> (b v) t h w c")
        elif torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == b:
            flat[key] = repeat(value, "b ... -> (b v) ...", v=v)
        else:
            flat[key] = value
    return flat, v


def _rows(value, start: int, stop: int, n: int):
    """Rows [start, stop) of a per-clip value (tensor or list with ``n`` rows); anything else as it is."""
    if (torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == n) or \
            (isinstance(value, (list, tuple)) and len(value) == n):
        return value[start:stop]
    return value


def chunked_forward(call, flat: dict, max_views: int) -> dict:
    """``call(flat)`` run on at most ``max_views`` clips (rows of ``flat``) at a time; 0 = one call."""
    n = len(flat["video"])
    if max_views <= 0 or n <= max_views:
        return call(flat)
    outs, sizes = [], []
    for start in range(0, n, max_views):
        stop = min(start + max_views, n)
        outs.append(call({k: _rows(v, start, stop, n) for k, v in flat.items()}))
        sizes.append(stop - start)
    merged = {}
    for key, first in outs[0].items():
        values = [o[key] for o in outs]
        if torch.is_tensor(first) and first.ndim >= 1 and all(v.shape[0] == m for v, m in zip(values, sizes)):
            merged[key] = torch.cat(values)  # one row per clip
        elif torch.is_tensor(first) and first.ndim == 0 or isinstance(first, (int, float)):
            merged[key] = sum(v * m for v, m in zip(values, sizes)) / n  # a batch mean: weighted by rows
        else:
            raise ValueError(f"chunked evaluation: cannot combine the model's output {key!r} over chunks "
                             f"(set data.eval_max_views=0)")
    return merged


def video_scores(logits: torch.Tensor, views: int, task: str | Task) -> torch.Tensor:
    """(B*V, K) per-view outputs -> (B, K) view-averaged scores, in the space MetricAccumulator reads
    as logits (``Task.average_views``)."""
    return make_task(task, logits.shape[-1]).average_views(logits, views)


class ViewAveraged:
    """Calls ``model`` on a batch with flattened views and returns its outputs with ``logits``
    replaced by the per-video averaged scores; single-view batches pass through."""

    def __init__(self, model, task: str | Task) -> None:
        self.model = model
        self.task = task

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        flat, views = flatten_views(batch)
        out = self.model(flat)
        if views == 1:
            return out
        return {**out, "logits": video_scores(out["logits"].float(), views, self.task)}
