"""Multi-view (clips x crops) evaluation in the pipelines: how the decoder emits the views.

With ``data.eval_clips`` x ``data.eval_crops`` > 1 view, the evaluation decoder emits ``video`` of
shape (n, V, T, S, S, 3) (side modalities, targets and masks stay one per video). The engine
(``components/engine/views.py``) flattens the views into the batch and averages each video's
outputs with its Task, so top-1/top-5, mAP and MSE are computed per video on the averaged scores.
The loss reported at evaluation stays the model's own loss, averaged over all views (for M2-CLIP
that is its weighted sum of decoder terms, not a cross-entropy). ``settings``: ingest's DecodeSettings.
"""

from __future__ import annotations

import math

from components.video.decode import ClipSpec
from components.video.views import ViewSpec

_ENGINE_VIEWS = ("ViewAveraged", "flatten_views", "video_scores")  # the engine's, re-exported


def __getattr__(name: str):
    """The engine's view helpers, imported on first use: the decoder actors import this module and
    need none of them (the engine imports torch)."""
    if name in _ENGINE_VIEWS:
        from components.engine import views

        return getattr(views, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_view_counts(clips: int | None, crops: int | None) -> None:
    """``--clips`` / ``--crops`` of evaluate and zeroshot: None keeps the run's setting, else at least 1."""
    from components.config import ConfigError

    for flag, value in (("--clips", clips), ("--crops", crops)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")


def parse_views(text: str) -> tuple[int, int]:
    """``--views 4x3`` (the papers' clips x crops) -> (4, 3); a bad value raises ConfigError."""
    from components.config import ConfigError

    clips, sep, crops = str(text).strip().lower().partition("x")
    if not (sep and clips.isdigit() and crops.isdigit() and int(clips) >= 1 and int(crops) >= 1):
        raise ConfigError(f"views {text!r}: expected CLIPSxCROPS with both at least 1, e.g. 4x3")
    return int(clips), int(crops)


def num_views(settings) -> int:
    """Views per video the decoder emits: 1 for training clips and single-view evaluation."""
    if settings.training:
        return 1
    return settings.eval_clips * settings.eval_crops


def view_decoding(settings) -> tuple[ClipSpec, ViewSpec] | None:
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
