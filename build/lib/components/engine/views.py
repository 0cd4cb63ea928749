"""Several views per video at evaluation: flatten them into the batch, average their scores after.

With clips x crops > 1 views, a batch's ``video`` is (B, V, T, H, W, C) (side inputs, targets and
masks stay one per video). Before the model the views are flattened into the batch (B*V clips,
other tensors repeated per view); after it each video's V outputs become one score with the Task's
``average_views`` (softmax / sigmoid probabilities, regression values, averaged), so metrics are
computed per video. The loss stays the model's own loss, averaged over all views.
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
