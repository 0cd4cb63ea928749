"""decord: seeks by frame index and resizes inside ffmpeg; the fastest on short clips (no release since 2022,
and its bundled ffmpeg has no AV1 decoder)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

import numpy as np

from components.video.decoders.native_stderr import dropping
from components.video.errors import VideoDecodeError
from components.video.source import opened

# decord's own log lines ("[18:15:50] /github/workspace/src/video/video_reader.cc:83: ERROR opening: ...");
# each one precedes an exception that carries the same message
_DECORD_LOG_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] \S*src/\S+\.cc:\d+: ")


def _decord_line(line: str) -> bool:
    return bool(_DECORD_LOG_LINE.match(line))


@cache
def _decord():
    """decord, with its bundled ffmpeg's log off ("moov atom not found" before every failed open): the
    failure reaches the caller as a VideoDecodeError naming the file."""
    import decord  # lazy: importing this module should not load ffmpeg

    decord.logging.set_level(decord.logging.QUIET)
    return decord

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


def _open(path: str, height: int = -1, width: int = -1, data: bytes | None = None):  # -> decord.VideoReader
    """Open a reader (-1 = native dimension) on the file, or on ``data`` (its bytes) when given, turning
    every failure into VideoDecodeError."""
    decord = _decord()
    try:
        with dropping(_decord_line):
            # num_threads=1: parallelism comes from data-loader workers, not from ffmpeg threads.
            return decord.VideoReader(opened(path, data), width=width, height=height, num_threads=1)
    except Exception as e:  # decord raises DECORDError / RuntimeError / AssertionError
        first = str(e).splitlines()[0] if str(e) else ""
        raise VideoDecodeError(path, f"cannot open video ({type(e).__name__}: {first})") from e


def _native_dims(path: str, data: bytes | None = None) -> tuple[int, int]:
    """(height, width) from the container header via PyAV (no decoding needed)."""
    import av

    try:
        with av.open(opened(path, data)) as container:
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


def probe(path: str, data: bytes | None = None) -> tuple[int, float, int, int]:
    vr = _open(path, data=data)
    try:
        n, fps = len(vr), float(vr.get_avg_fps())
    finally:
        _release(vr)
        del vr
    h, w = _native_dims(path, data)
    return n, fps, h, w


def read(path: str, size: int | None, choose: Callable[[int, float], np.ndarray],
         data: bytes | None = None) -> np.ndarray:
    height = width = -1 if size is None else size
    factor = 1 if width == -1 else _width_factor(width)
    while True:
        vr = _open(path, height, width * factor if width > 0 else width, data)
        try:
            flat = choose(len(vr), float(vr.get_avg_fps()))  # (N,)
            frames = get_batch(vr, flat, path)  # (N, H, W*factor, C)
            break
        except _WidthBugError as err:
            if factor > 1:
                raise VideoDecodeError(path, f"decode failed at width {width * factor}") from err
            if width == -1:  # native size hit the bug: decode wide at the native dims
                height, width = _native_dims(path, data)
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
    return frames


def get_batch(vr, idx: np.ndarray, path: str) -> np.ndarray:
    """get_batch with the off-by-one fallback: the container's frame count can exceed the
    decodable frames by one, so a failure touching the last index retries one lower."""
    n = len(vr)
    try:
        with dropping(_decord_line):
            batch = vr.get_batch(idx)
    except Exception as e:
        if _WIDTH_BUG in str(e):
            raise _WidthBugError(str(e)) from e
        if n < 2 or idx.max() < n - 1:
            raise VideoDecodeError(path, f"decode failed ({type(e).__name__}: {e})") from e
        try:
            with dropping(_decord_line):
                batch = vr.get_batch(np.minimum(idx, n - 2))
        except Exception as e2:
            raise VideoDecodeError(path, f"decode failed ({type(e2).__name__}: {e2})") from e2
    arr = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)  # bridge-agnostic
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != idx.shape[0]:
        raise VideoDecodeError(path, f"unexpected decoded batch {arr.shape} {arr.dtype}")
    return arr
