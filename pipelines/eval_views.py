"""Multi-view (clips x crops) evaluation in the pipelines: decode, flatten, run, average per video.

With ``data.eval_clips`` x ``data.eval_crops`` > 1 view, the evaluation decoder emits ``video`` of
shape (n, V, T, S, S, 3) (side modalities, targets and masks stay one per video). Before the model
the views are flattened into the batch (B*V clips, side inputs and targets repeated per view), and
after it the V outputs of each video are averaged with ``components.video.views.average_view_scores``
(softmax / sigmoid probabilities, regression values), so top-1/top-5, mAP and MSE are computed per
video on the averaged scores. The loss reported at evaluation stays the model's own loss, averaged
over all views (for M2-CLIP that is its weighted sum of decoder terms, not a cross-entropy).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from einops import rearrange, repeat

from components.video.decode import ClipSpec
from components.video.views import ViewSpec, average_view_scores

if TYPE_CHECKING:  # pipelines.ingest imports this module
    from pipelines.ingest import DecodeSettings


def num_views(settings: DecodeSettings) -> int:
    """Views per video the decoder emits: 1 for training clips and single-view evaluation."""
    if settings.training:
        return 1
    return settings.eval_clips * settings.eval_crops


def view_decoding(settings: DecodeSettings) -> tuple[ClipSpec, ViewSpec] | None:
    """(decode spec, views) for multi-view evaluation, None otherwise.

    Several crops need a frame larger than the crop: the decode is img_size * decode_scale whenever
    eval_crops > 1 (or augment is on, whose evaluation is the centre crop of that same decode), and
    each view is an img_size crop of it, spread along the frame (one crop = the centre).
    """
    if num_views(settings) == 1:
        return None
    larger = settings.augment or settings.eval_crops > 1
    decode = math.ceil(settings.size * settings.decode_scale) if larger else settings.size
    if settings.eval_crops > 1 and decode <= settings.size:
        raise ValueError(f"data.eval_crops={settings.eval_crops} needs data.decode_scale > 1 "
                         f"(crops of {settings.size} px from a larger decode)")
    spec = ClipSpec(num_frames=settings.num_frames, size=decode, sampling=settings.sampling,
                    stride=settings.stride, target_fps=settings.target_fps)
    return spec, ViewSpec(num_clips=settings.eval_clips, num_crops=settings.eval_crops, crop_size=settings.size)


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


def video_scores(logits: torch.Tensor, views: int, task: str) -> torch.Tensor:
    """(B*V, K) per-view outputs -> (B, K) view-averaged scores, in the space MetricAccumulator reads
    as logits: log of the mean softmax (single_label; ranks as the mean probability does), logit of the
    mean sigmoid (multi_label; its sigmoid is the mean probability), mean values (regression)."""
    if views == 1:
        return logits
    avg = average_view_scores(logits, views, task)  # (B, K)
    if task == "single_label":
        return avg.log()
    if task == "multi_label":
        p = avg.double()
        return (p.log() - (-p).log1p()).float()
    return avg


class ViewAveraged:
    """Calls ``model`` on a batch with flattened views and returns its outputs with ``logits``
    replaced by the per-video averaged scores (``video_scores``); single-view batches pass through."""

    def __init__(self, model, task: str) -> None:
        self.model = model
        self.task = task

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        flat, views = flatten_views(batch)
        out = self.model(flat)
        if views == 1:
            return out
        return {**out, "logits": video_scores(out["logits"].float(), views, self.task)}
