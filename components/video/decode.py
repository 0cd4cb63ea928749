"""Clip decoding: frame range + sampling -> uint8 (T, H, W, C), resized by the decoder backend.

The backend is chosen by name (``decoder``; components/video/decoders: decord, pyav), with an
optional ``fallback`` backend tried on a file the first cannot read. Normalisation is deliberately
not done here: the model normalises on its own device with the backbone's mean/std, so the data
path ships compact uint8. Every failure to read a file raises `VideoDecodeError` (naming the file)
so callers can skip-and-count instead of crashing a worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from components.video.decoders import get_decoder
from components.video.errors import VideoDecodeError
from components.video.source import Fetch, video_bytes
from components.video.sampling import fps_indices, segment_indices, strided_indices, uniform_indices

__all__ = ["ClipSpec", "VideoDecodeError", "decode_clip", "probe_video", "resolve_range"]

Sampling = Literal["uniform", "segment", "strided", "fps"]
IndicesFn = Callable[[int, int], np.ndarray]
OnFallback = Callable[[VideoDecodeError], None]


@dataclass(frozen=True)
class ClipSpec:
    """How to turn a frame range into a clip.

    size: square output side in pixels (decoder resizes; aspect ratio is not kept), or None
    for native resolution. stride: only used by "strided" sampling; target_fps only by "fps"
    sampling (T frames at that rate, whatever the video's own rate).
    """

    num_frames: int = 8
    size: int | None = 64
    sampling: Sampling = "uniform"
    stride: int = 2
    target_fps: float = 0.0

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"ClipSpec.num_frames must be >= 1, got {self.num_frames}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"ClipSpec.size must be >= 1 or None, got {self.size}")
        if self.sampling not in ("uniform", "segment", "strided", "fps"):
            raise ValueError(f"ClipSpec.sampling must be uniform|segment|strided|fps, "
                             f"got {self.sampling!r}")
        if self.sampling == "fps" and not self.target_fps > 0:
            raise ValueError(f"ClipSpec.target_fps must be > 0 for fps sampling, got {self.target_fps}")
        if self.stride < 1:
            raise ValueError(f"ClipSpec.stride must be >= 1, got {self.stride}")

    def indices(self, start: int, end: int, rng: np.random.Generator | None = None,
                fps: float = 0.0) -> np.ndarray:
        """Frame indices for [start, end); rng=None gives the deterministic (eval) variant;
        fps is the video's frame rate (needed by "fps" sampling only)."""
        if self.sampling == "fps":
            return fps_indices(start, end, self.num_frames, fps, self.target_fps, rng)
        if self.sampling == "strided":
            return strided_indices(start, end, self.num_frames, self.stride, rng)
        if self.sampling == "segment" and rng is not None:
            return segment_indices(start, end, self.num_frames, rng)
        return uniform_indices(start, end, self.num_frames)


def _with_fallback(path: str, decoder: str, fallback: str | None, on_fallback: OnFallback | None, call,
                   data: bytes | None = None, fetch: Fetch | None = None):
    """call(backend, data) with `decoder`, then with `fallback` when the first raises VideoDecodeError.
    `data`: the video's bytes when the caller has them; else a remote video is fetched once (with
    `fetch` when given) and a local one checked (missing / empty: no backend can help)."""
    if data is None:
        data = video_bytes(path, fetch)
    try:
        return call(get_decoder(decoder), data)
    except VideoDecodeError as first:
        if not fallback or fallback == decoder:
            raise
        try:
            out = call(get_decoder(fallback), data)
        except VideoDecodeError as second:
            raise VideoDecodeError(path, f"{decoder}: {first.reason}; {fallback}: {second.reason}") from second
        if on_fallback is not None:
            on_fallback(first)
        return out


def probe_video(path: str | os.PathLike, decoder: str = "decord", fallback: str | None = None,
                on_fallback: OnFallback | None = None, data: bytes | None = None,
                fetch: Fetch | None = None) -> tuple[int, float, int, int]:
    """(num_frames as reported by the container, avg fps, height, width) at native size."""
    path = str(path)
    return _with_fallback(path, decoder, fallback, on_fallback, lambda backend, b: backend.probe(path, b), data, fetch)


def resolve_range(num_frames: int, fps: float, start_frame: int | None = None,
                  end_frame: int | None = None, start_sec: float | None = None,
                  end_sec: float | None = None) -> tuple[int, int]:
    """Frame range [start, end) clamped to the video; frames win over seconds, none = whole.

    Seconds map to frames by rounding sec * fps (frame i shows at i / fps), so a clip at
    [1.0 s, 2.0 s) of an 8 fps video is frames [8, 16).
    """
    if start_frame is not None or end_frame is not None:
        s = 0 if start_frame is None else int(start_frame)
        e = num_frames if end_frame is None else int(end_frame)
    elif start_sec is not None or end_sec is not None:
        if not fps > 0:
            raise ValueError(f"cannot map seconds to frames: fps={fps}")
        s = 0 if start_sec is None else int(round(float(start_sec) * fps))
        e = num_frames if end_sec is None else int(round(float(end_sec) * fps))
    else:
        s, e = 0, num_frames
    s, e = max(s, 0), min(e, num_frames)
    if e <= s:
        raise ValueError(f"frame range [{s}, {e}) is empty within a {num_frames}-frame video")
    return s, e


def decode_clip(path: str | os.PathLike, spec: ClipSpec, start_frame: int | None = None,
                end_frame: int | None = None, start_sec: float | None = None,
                end_sec: float | None = None, rng: np.random.Generator | None = None,
                indices_fn: IndicesFn | None = None, decoder: str = "decord", fallback: str | None = None,
                on_fallback: OnFallback | None = None, data: bytes | None = None,
                fetch: Fetch | None = None) -> np.ndarray:
    """Decode one clip as uint8 (T, H, W, 3).

    `rng` switches to training-time random sampling (segment/strided offset); None is the
    deterministic evaluation sampling. `indices_fn(start, end)` overrides `spec.sampling`; if it
    returns a (V, T) array (e.g. multiview_indices) the result is (V, T, H, W, 3), decoded in one
    batch so shared frames are read once. `decoder` names the backend, `fallback` a second one tried
    when the first cannot read the file; `on_fallback(first_error)` is called when it succeeded.
    `path` may be an s3://, gs:// or https:// URI: its bytes are fetched (by `fetch`, e.g. a node cache,
    unless given as `data`) and decoded in memory.
    """
    path = str(path)
    shape: list[tuple[int, ...]] = []

    def choose(n: int, fps: float) -> np.ndarray:
        try:
            s, e = resolve_range(n, fps, start_frame, end_frame, start_sec, end_sec)
        except ValueError as err:
            raise VideoDecodeError(path, str(err)) from err
        idx = np.asarray(indices_fn(s, e) if indices_fn is not None else spec.indices(s, e, rng, fps),
                         dtype=np.int64)  # (T,) or (V, T)
        shape[:] = [idx.shape]
        return np.clip(idx.reshape(-1), 0, n - 1)  # (V*T,) or (T,)

    frames = _with_fallback(path, decoder, fallback, on_fallback,
                            lambda backend, b: backend.read(path, spec.size, choose, b), data, fetch)  # (V*T, H, W, C)
    return frames.reshape(*shape[0], *frames.shape[1:])  # (T, H, W, C) or (V, T, H, W, C)
