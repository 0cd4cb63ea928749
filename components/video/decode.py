"""Clip decoding with decord: resize in the decoder, return uint8 (T, H, W, C).

Normalisation is deliberately not done here: the model normalises on its own device with the
backbone's mean/std, so the data path ships compact uint8.
Every failure to read a file raises `VideoDecodeError` (naming the file) so callers can
skip-and-count instead of crashing a worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from components.video.sampling import fps_indices, segment_indices, strided_indices, uniform_indices

Sampling = Literal["uniform", "segment", "strided", "fps"]
IndicesFn = Callable[[int, int], np.ndarray]


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:  # picklable across Ray workers despite the 2-arg __init__
        return (type(self), (self.path, self.reason))


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


# decord 0.6 fails get_batch ("size must exactly match") for some output widths (seen: 2-8, 12,
# 16, 24, 48, 72 on x86-64), whatever the source. Such widths are decoded at an integer multiple
# >= _SAFE_WIDTH and box-averaged back; widths seen failing are remembered per process.
_BAD_WIDTHS: set[int] = set()
_SAFE_WIDTH = 80
_WIDTH_BUG = "size must exactly match"


class _WidthBugError(Exception):
    """decord cannot produce this output width (internal; triggers the wide-decode fallback)."""


def _width_factor(width: int) -> int:
    return max(2, -(-_SAFE_WIDTH // width)) if width in _BAD_WIDTHS else 1


def _open(path: str, height: int = -1, width: int = -1):  # -> decord.VideoReader
    """Open a reader (-1 = native dimension), turning every failure into VideoDecodeError."""
    import decord  # lazy: importing this module should not load ffmpeg

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except OSError as e:
        raise VideoDecodeError(path, f"cannot stat file: {e}") from e
    if st.st_size == 0:
        raise VideoDecodeError(path, "empty (zero-byte) file")
    try:
        # num_threads=1: parallelism comes from data-loader workers, not from ffmpeg threads.
        return decord.VideoReader(path, width=width, height=height, num_threads=1)
    except Exception as e:  # decord raises DECORDError / RuntimeError / AssertionError
        first = str(e).splitlines()[0] if str(e) else ""
        raise VideoDecodeError(path, f"cannot open video ({type(e).__name__}: {first})") from e


def _native_dims(path: str) -> tuple[int, int]:
    """(height, width) from the container header via PyAV (no decoding needed)."""
    import av

    try:
        with av.open(path) as container:
            ctx = container.streams.video[0].codec_context
            return int(ctx.height), int(ctx.width)
    except Exception as e:  # av.FFmpegError, IndexError (no video stream)
        raise VideoDecodeError(path, f"cannot read video header ({type(e).__name__}: {e})") from e


def _release(vr) -> None:
    # decord leaks decoder memory when readers are kept alive/positioned mid-stream.
    try:
        vr.seek(0)
    except Exception:
        pass


def probe_video(path: str | os.PathLike) -> tuple[int, float, int, int]:
    """(num_frames as reported by the container, avg fps, height, width) at native size."""
    path = str(path)
    vr = _open(path)
    try:
        n, fps = len(vr), float(vr.get_avg_fps())
    finally:
        _release(vr)
        del vr
    h, w = _native_dims(path)
    return n, fps, h, w


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
                indices_fn: IndicesFn | None = None) -> np.ndarray:
    """Decode one clip as uint8 (T, H, W, 3).

    `rng` switches to training-time random sampling (segment/strided offset); None is the
    deterministic evaluation sampling. `indices_fn(start, end)` overrides `spec.sampling`; if it
    returns a (V, T) array (e.g. multiview_indices) the result is (V, T, H, W, 3), decoded in one
    batch so shared frames are read once.
    """
    path = str(path)
    height = width = -1 if spec.size is None else spec.size
    factor = 1 if width == -1 else _width_factor(width)
    while True:
        vr = _open(path, height, width * factor if width > 0 else width)
        try:
            n = len(vr)
            try:
                s, e = resolve_range(n, float(vr.get_avg_fps()), start_frame, end_frame,
                                     start_sec, end_sec)
            except ValueError as err:
                raise VideoDecodeError(path, str(err)) from err
            idx = (indices_fn(s, e) if indices_fn is not None
                   else spec.indices(s, e, rng, float(vr.get_avg_fps())))
            idx = np.asarray(idx, dtype=np.int64)
            flat = np.clip(idx.reshape(-1), 0, n - 1)  # (V*T,) or (T,)
            frames = _get_batch(vr, flat, path)  # (V*T, H, W*factor, C)
            break
        except _WidthBugError as err:
            if factor > 1:
                raise VideoDecodeError(path, f"decode failed at width {width * factor}") from err
            if width == -1:  # native size hit the bug: decode wide at the native dims
                height, width = _native_dims(path)
            _BAD_WIDTHS.add(width)
            factor = _width_factor(width)
        finally:
            _release(vr)
            del vr
    if factor > 1:  # box-average groups of `factor` columns back to the requested width
        nf, h, wk, c = frames.shape
        # (N, H, W*k, C) -> (N, H, W, k, C) -> mean over k -> (N, H, W, C)
        frames = frames.reshape(nf, h, wk // factor, factor, c).mean(axis=3)
        frames = np.rint(frames).astype(np.uint8)
    return frames.reshape(*idx.shape, *frames.shape[1:])  # (T, H, W, C) or (V, T, H, W, C)


def _get_batch(vr, idx: np.ndarray, path: str) -> np.ndarray:
    """get_batch with the off-by-one fallback: the container's frame count can exceed the
    decodable frames by one, so a failure touching the last index retries one lower."""
    n = len(vr)
    try:
        batch = vr.get_batch(idx)
    except Exception as e:
        if _WIDTH_BUG in str(e):
            raise _WidthBugError(str(e)) from e
        if n < 2 or idx.max() < n - 1:
            raise VideoDecodeError(path, f"decode failed ({type(e).__name__}: {e})") from e
        try:
            batch = vr.get_batch(np.minimum(idx, n - 2))
        except Exception as e2:
            raise VideoDecodeError(path, f"decode failed ({type(e2).__name__}: {e2})") from e2
    arr = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)  # bridge-agnostic
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != idx.shape[0]:
        raise VideoDecodeError(path, f"unexpected decoded batch {arr.shape} {arr.dtype}")
    return arr
