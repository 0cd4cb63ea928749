"""Clip augmentation on uint8 (T, H, W, C) arrays, as run on the data workers.

Every random choice is made once per clip (one crop box, one flip, one set of colour factors for
all frames), so motion stays coherent, and comes from the caller's `np.random.Generator`, so a
seed fixes the result. Resizing goes through Pillow (bilinear, with its antialiasing when
shrinking) and the output stays uint8: normalisation with the backbone's mean/std happens in
the model (components/model.py), on its device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


def _check(clip: np.ndarray) -> None:
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (T, H, W, 3) clip, got {clip.dtype} {clip.shape}")


def crop_resize(clip: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Crop box (y0, x0, height, width) of every frame, resized to (size, size)."""
    _check(clip)
    y0, x0, h, w = box
    if (h, w) == (size, size) and float(y0).is_integer() and float(x0).is_integer():
        y, x = int(y0), int(x0)
        return np.ascontiguousarray(clip[:, y:y + size, x:x + size])  # plain crop: no resampling
    pil_box = (x0, y0, x0 + w, y0 + h)
    out = np.empty((clip.shape[0], size, size, 3), dtype=np.uint8)
    for t in range(clip.shape[0]):
        out[t] = np.asarray(Image.fromarray(clip[t]).resize((size, size), Image.BILINEAR, box=pil_box))
    return out


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float],
                            ratio: tuple[float, float], rng: np.random.Generator) -> tuple[float, float, float, float]:
    """(y0, x0, h, w) covering a random share `scale` of the area with aspect ratio in `ratio`
    (log-uniform); after 10 misses, the largest centred box with a ratio in range."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = math.sqrt(target * aspect)
        h = math.sqrt(target / aspect)
        if 0 < w <= width and 0 < h <= height:
            return float(rng.uniform(0, height - h)), float(rng.uniform(0, width - w)), h, w
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w, h = (float(width), width / aspect) if width / height < aspect else (height * aspect, float(height))
    w, h = min(w, width), min(h, height)
    return (height - h) / 2, (width - w) / 2, h, w


def color_jitter(clip: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation, each scaled by a factor in [1 - s, 1 + s], the same
    for every frame (contrast pivots on the clip's mean grey level)."""
    _check(clip)
    b, c, s = rng.uniform(max(0.0, 1 - strength), 1 + strength, size=3)
    x = clip.astype(np.float32) * b
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (T, H, W)
    x = (x - grey.mean()) * c + grey.mean()
    grey = (grey - grey.mean()) * c + grey.mean()
    x = grey[..., None] + (x - grey[..., None]) * s
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def center_crop(clip: np.ndarray, size: int) -> np.ndarray:
    """Centred size x size window (resized up first when a side is smaller than size)."""
    return multi_crop(clip, size, 1)[0]


def multi_crop(clip: np.ndarray, size: int, num_crops: int) -> np.ndarray:
    """(num_crops, T, size, size, 3): square crops spread evenly along the longer side, centred
    on the shorter one (num_crops=3: the usual left/centre/right or top/centre/bottom)."""
    _check(clip)
    if num_crops < 1:
        raise ValueError(f"num_crops must be >= 1, got {num_crops}")
    _, h, w, _ = clip.shape
    if min(h, w) < size:  # too small: scale the short side up to size, keeping the aspect
        f = size / min(h, w)
        clip = resize(clip, (max(size, round(h * f)), max(size, round(w * f))))
        _, h, w, _ = clip.shape
    slack_y, slack_x = h - size, w - size
    if num_crops == 1:
        offsets = [(slack_y // 2, slack_x // 2)]
    elif slack_x >= slack_y:
        offsets = [(slack_y // 2, int(round(v))) for v in np.linspace(0, slack_x, num_crops)]
    else:
        offsets = [(int(round(v)), slack_x // 2) for v in np.linspace(0, slack_y, num_crops)]
    return np.stack([clip[:, y:y + size, x:x + size] for y, x in offsets])


def resize(clip: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Whole frames resized to (height, width)."""
    _check(clip)
    h, w = hw
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in clip])


@dataclass(frozen=True)
class ClipAugment:
    """Training augmentation: random resized crop -> horizontal flip -> RandAugment -> colour jitter.

    scale: share of the frame area kept; ratio: aspect-ratio range of the crop; flip: random
    horizontal flip with probability 0.5 (turn off for direction-sensitive labels such as
    Something-Something's "left to right"); rand_augment: timm's RandAugment config string, one op
    sequence per clip (``rand_augment.py``), empty = off; color_jitter: 0 = off.
    """

    size: int
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    color_jitter: float = 0.0
    rand_augment: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")
        if self.rand_augment:
            from components.video.rand_augment import ClipRandAugment  # timm: only when asked for

            object.__setattr__(self, "_rand_augment", ClipRandAugment(self.rand_augment, self.size))

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check(clip)
        box = random_resized_crop_box(clip.shape[1], clip.shape[2], self.scale, self.ratio, rng)
        out = crop_resize(clip, box, self.size)
        if self.flip and rng.random() < 0.5:
            out = np.ascontiguousarray(out[:, :, ::-1])
        if self.rand_augment:
            out = self._rand_augment(out, rng)
        if self.color_jitter > 0:
            out = color_jitter(out, self.color_jitter, rng)
        return out
