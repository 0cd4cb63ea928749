"""Multi-view evaluation: clips x crops views of one video, and averaging their scores.

A video is scored as the mean over `num_clips` temporal views (spread over the clip's range)
times `num_crops` spatial crops (spread along the frame's longer side), the usual
"clips x crops" protocol; each task averages its views' scores (``Task.average_views``:
after the softmax for single-label, the sigmoid for multi-label, regression outputs as they are).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from einops import rearrange

from components.video.decode import ClipSpec, decode_clip, probe_video
from components.video.source import video_bytes
from components.video.sampling import fps_multiview_indices, multiview_indices
from components.video.transforms import multi_crop


@dataclass(frozen=True)
class ViewSpec:
    num_clips: int = 1
    num_crops: int = 1
    crop_size: int = 0  # 0 = the decode size (no crop; then num_crops must be 1)

    @property
    def num_views(self) -> int:
        return self.num_clips * self.num_crops

    def __post_init__(self) -> None:
        if self.num_clips < 1 or self.num_crops < 1:
            raise ValueError(f"num_clips and num_crops must be >= 1, got {self.num_clips}, {self.num_crops}")
        if self.crop_size == 0 and self.num_crops > 1:
            raise ValueError("several crops need crop_size smaller than the decode size")


def decode_views(path: str | os.PathLike, spec: ClipSpec, views: ViewSpec, fps: float = 0.0,
                 decoder: str = "decord", fallback: str | None = None, on_fallback=None, data: bytes | None = None,
                 fetch=None, **ranges) -> np.ndarray:
    """uint8 (num_clips * num_crops, T, S, S, 3), clip-major: view v = clip v // num_crops,
    crop v % num_crops. `fps` is the video's rate for "fps" sampling (0 = probe the file);
    `decoder`, `fallback`, `on_fallback`, `data`, `fetch` and `ranges` are decode_clip's keywords."""
    if spec.sampling == "fps" and not fps > 0:
        if data is None:  # a remote video: fetched once for the probe and the decode
            data = video_bytes(str(path), fetch)
        fps = probe_video(path, decoder, fallback, data=data)[1]

    def indices(start: int, end: int) -> np.ndarray:
        if spec.sampling == "fps":
            return fps_multiview_indices(start, end, spec.num_frames, views.num_clips, fps, spec.target_fps)
        stride = spec.stride if spec.sampling == "strided" else None
        return multiview_indices(start, end, spec.num_frames, views.num_clips, stride)

    clips = decode_clip(path, spec, indices_fn=indices, decoder=decoder, fallback=fallback,
                        on_fallback=on_fallback, data=data, fetch=fetch, **ranges)  # (V_t, T, H, W, C)
    if views.crop_size == 0:
        return clips
    crops = np.stack([multi_crop(c, views.crop_size, views.num_crops) for c in clips])  # (V_t, V_s, T, S, S, C)
    return rearrange(crops, "vt vs t h w c -> (vt vs) t h w c")
