"""Frame-index samplers over a half-open frame range [start, end).

Pure numpy. Every sampler returns int64 indices inside [start, end), sorted in time, and
copes with ranges shorter than `num_frames` by repeating frames (never by reading outside).
Training samplers take a `np.random.Generator`; evaluation samplers are deterministic.
"""

from __future__ import annotations

import numpy as np


def _check(start: int, end: int, num_frames: int) -> int:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if end <= start or start < 0:
        raise ValueError(f"empty or negative frame range [{start}, {end})")
    return int(end) - int(start)


def uniform_indices(start: int, end: int, num_frames: int) -> np.ndarray:
    """Centre frame of each of `num_frames` equal segments (deterministic, for evaluation)."""
    n = _check(start, end, num_frames)
    seg = n / num_frames
    idx = np.floor(seg * (np.arange(num_frames) + 0.5)).astype(np.int64)  # (T,)
    return start + np.clip(idx, 0, n - 1)


def segment_indices(start: int, end: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """TSN training sampling: one uniformly random frame inside each of T equal segments."""
    n = _check(start, end, num_frames)
    bounds = np.floor(np.linspace(0, n, num_frames + 1)).astype(np.int64)  # (T+1,)
    lo = bounds[:-1]
    # A segment shorter than one frame (n < T) degenerates to its first frame -> repeats.
    width = np.maximum(bounds[1:] - lo, 1)
    idx = lo + np.floor(rng.random(num_frames) * width).astype(np.int64)  # (T,)
    return start + np.clip(idx, 0, n - 1)


def strided_indices(start: int, end: int, num_frames: int, stride: int,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Contiguous window of T frames `stride` apart; random offset with rng, centred without.

    When the window does not fit, the stride is kept (it sets the apparent motion speed) and
    the tail is clamped to the last frame, i.e. the last frame repeats.
    """
    n = _check(start, end, num_frames)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    span = (num_frames - 1) * stride + 1
    slack = max(n - span, 0)
    offset = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    idx = offset + np.arange(num_frames, dtype=np.int64) * stride  # (T,)
    return start + np.clip(idx, 0, n - 1)


def multiview_indices(start: int, end: int, num_frames: int, num_clips: int,
                      stride: int | None = None) -> np.ndarray:
    """`num_clips` deterministic temporal views, shape (num_clips, num_frames).

    Without stride: TSN-style views that each span the whole range, view v taking the frame at
    relative position (v + 0.5) / num_clips inside every segment (num_clips=1 == uniform).
    With stride: strided windows whose offsets are spread evenly from first to last fit.
    """
    n = _check(start, end, num_frames)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if stride is None:
        seg = n / num_frames
        phase = (np.arange(num_clips) + 0.5) / num_clips  # (V,)
        rel = np.arange(num_frames)[None, :] + phase[:, None]  # (V, T)
        idx = np.floor(seg * rel).astype(np.int64)
    else:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        span = (num_frames - 1) * stride + 1
        slack = max(n - span, 0)
        # One view is centred; several run from the first possible window to the last one.
        if num_clips == 1:
            offsets = np.array([slack // 2], dtype=np.int64)
        else:
            offsets = np.round(np.linspace(0, slack, num_clips)).astype(np.int64)  # (V,)
        idx = offsets[:, None] + np.arange(num_frames, dtype=np.int64)[None, :] * stride  # (V, T)
    return start + np.clip(idx, 0, n - 1)


def fps_indices(start: int, end: int, num_frames: int, video_fps: float, target_fps: float,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """T frames as if the video ran at `target_fps`: one every video_fps / target_fps source
    frames (fractional steps rounded per frame), so clip duration in seconds is the same for
    videos of any frame rate. Random window with rng, centred without; a range too short for
    the window keeps the step and repeats the last frame."""
    return fps_multiview_indices(start, end, num_frames, 1, video_fps, target_fps, rng)[0]


def fps_multiview_indices(start: int, end: int, num_frames: int, num_clips: int, video_fps: float,
                          target_fps: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """(num_clips, num_frames) windows at `target_fps`: evenly spread from the first possible
    window to the last (one view: centred, or random with rng)."""
    n = _check(start, end, num_frames)
    if not (video_fps > 0 and target_fps > 0):
        raise ValueError(f"fps must be positive, got video_fps={video_fps}, target_fps={target_fps}")
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    step = video_fps / target_fps
    slack = max(n - 1 - (num_frames - 1) * step, 0.0)
    if num_clips == 1:
        offsets = np.array([rng.uniform(0, slack) if rng is not None else slack / 2])
    else:
        offsets = np.linspace(0, slack, num_clips)  # (V,)
    idx = np.round(offsets[:, None] + np.arange(num_frames)[None, :] * step).astype(np.int64)  # (V, T)
    return start + np.clip(idx, 0, n - 1)
