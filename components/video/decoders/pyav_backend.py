"""PyAV (FFmpeg 7 bindings, maintained): reads what decord cannot (e.g. AV1); decodes forward from the
keyframe before the first wanted frame and stops after the last one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from av.video.reformatter import VideoReformatter

from components.video.errors import VideoDecodeError
from components.video.source import opened

# The first wanted frame at least this far in: seek to the keyframe before it rather than decode
# from frame 0 (seeking costs a re-sync, so short clips near the start decode straight through).
SEEK_MIN_FRAMES = 48


def _open(path: str, data: bytes | None = None):
    import av

    try:
        container = av.open(opened(path, data))
    except Exception as e:  # av.FFmpegError and its subclasses, OSError
        raise VideoDecodeError(path, f"cannot open video ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # parallelism comes from the decoder workers, as with decord
    return container, stream


def _rate_and_count(container, stream) -> tuple[float, int]:
    """(fps, frames): the header's frame count, else the duration times the rate (as decord estimates)."""
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    if stream.frames > 0:
        return fps, int(stream.frames)
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    else:
        seconds = (container.duration or 0) / 1_000_000  # AV_TIME_BASE
    return fps, int(round(seconds * fps))


def probe(path: str, data: bytes | None = None) -> tuple[int, float, int, int]:
    container, stream = _open(path, data)
    with container:
        fps, n = _rate_and_count(container, stream)
        return n, fps, int(stream.codec_context.height), int(stream.codec_context.width)


def _index(frame, stream, fps: float) -> int | None:
    """A decoded frame's index from its timestamp (constant frame rate), None without one."""
    if frame.pts is None or not stream.time_base or not fps > 0:
        return None
    return int(round(float((frame.pts - (stream.start_time or 0)) * stream.time_base) * fps))


def _decode(container, stream, wanted: np.ndarray, fps: float, size: int | None, seek: bool) -> dict | None:
    """{index: (H, W, 3) uint8} for the wanted indices (sorted, unique); None when a seek landed past
    the first wanted frame (the caller decodes from the start instead)."""
    i = 0
    if seek:
        target = (stream.start_time or 0) + int(wanted[0] / fps / stream.time_base)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        i = None
    keep, last, got = set(wanted.tolist()), int(wanted[-1]), {}
    # one reformatter for the clip: it keeps its swscale context across frames (a frame's own
    # to_ndarray(width=...) builds a new one per call, ~2x slower at 112 px)
    reformatter = VideoReformatter()
    for frame in container.decode(stream):
        if i is None:  # first frame after the seek: where are we?
            i = _index(frame, stream, fps)
            if i is None or i > wanted[0]:
                return None
        if i in keep:
            got[i] = reformatter.reformat(frame, width=size, height=size, format="rgb24",
                                          interpolation="BILINEAR").to_ndarray()  # (H, W, 3)
        if i >= last:
            break
        i += 1
    return got


def read(path: str, size: int | None, choose: Callable[[int, float], np.ndarray],
         data: bytes | None = None) -> np.ndarray:
    container, stream = _open(path, data)
    try:
        with container:
            fps, n = _rate_and_count(container, stream)
            flat = np.asarray(choose(n, fps), dtype=np.int64)  # (N,)
            wanted = np.unique(flat)
            seek = bool(wanted[0] >= SEEK_MIN_FRAMES and fps > 0 and stream.time_base)
            got = _decode(container, stream, wanted, fps, size, seek)
        if got is None:  # the seek overshot: decode from the start
            container, stream = _open(path, data)
            with container:
                got = _decode(container, stream, wanted, fps, size, seek=False)
    except VideoDecodeError:
        raise
    except Exception as e:  # av.FFmpegError (InvalidDataError, ...), EOFError
        raise VideoDecodeError(path, f"decode failed ({type(e).__name__}: {e})") from e
    if not got:
        raise VideoDecodeError(path, "no frame could be decoded")
    # The header's count can exceed the decodable frames by one (as decord's off-by-one retry):
    # a wanted index one past the last decoded frame gets that frame; more is a broken file.
    last = max(got)
    missing = [int(k) for k in wanted if k not in got]
    if missing and (min(missing) <= last or max(missing) > last + 1):
        raise VideoDecodeError(path, f"decode failed: stream ended after frame {last}, frame {max(missing)} wanted")
    return np.stack([got[min(int(k), last)] for k in flat])  # (N, H, W, 3)
