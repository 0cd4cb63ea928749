"""RandAugment over a clip: one sampled op sequence per clip, applied identically to every frame.

timm's ``rand_augment_transform`` builds the ops (its names, magnitudes, probability ``p``,
magnitude noise ``mstd``, its ``rand-m9-n2-mstd0.5`` config syntax), but calling it once per frame
would sample new ops, magnitudes and signs for every frame. Here, per clip: the ops are chosen with
the caller's generator, and each op's own draws (apply or not, magnitude noise, sign) are made once
by running timm's ``AugmentOp.__call__`` with a recorder in place of the PIL function, under
Python's ``random`` seeded from the caller's generator (its global state is put back after). The
recorded arguments are then applied to every frame. Resampling is fixed to bilinear (timm's default
picks bilinear or bicubic at random on every call). Content-adaptive ops (AutoContrast, Equalize)
adapt to each frame, as in VideoMAE's per-frame application of one op list.
"""

from __future__ import annotations

import copy
import random

import numpy as np
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

# timm's image-mean fill for rotate/shear/translate, in uint8 (IMAGENET_DEFAULT_MEAN * 255)
FILL = (124, 116, 104)


def parse_rand_augment(config: str, size: int = 224):
    """timm's RandAugment for ``config`` (``rand-m9-n2-mstd0.5`` ...); ValueError for a bad string."""
    if not config.startswith("rand"):
        raise ValueError(f"a RandAugment config starts with 'rand' (e.g. rand-m9-n2-mstd0.5), got {config!r}")
    hparams = {"translate_const": int(size * 0.45), "img_mean": FILL, "interpolation": Image.BILINEAR}
    try:
        return rand_augment_transform(config, hparams)
    except (AssertionError, ValueError, KeyError) as e:
        raise ValueError(f"not a RandAugment config timm reads: {config!r} ({e or 'unknown section'})") from None


class _Record:
    """Stands in for an op's PIL function: keeps the arguments it was called with."""

    def __init__(self) -> None:
        self.args = None

    def __call__(self, img, *args, **kwargs):
        self.args = (args, kwargs)
        return img


class ClipRandAugment:
    """``clip`` uint8 (T, H, W, 3) + ``rng`` -> the same ops with the same magnitudes on every frame."""

    def __init__(self, config: str, size: int = 224) -> None:
        self.config = config
        self.ra = parse_rand_augment(config, size)

    def plan(self, rng: np.random.Generator) -> list:
        """[(op function, args, kwargs)] for one clip: the ops applied and their sampled arguments."""
        ra = self.ra
        weights = ra.choice_weights
        chosen = rng.choice(len(ra.ops), ra.num_layers, replace=weights is None, p=weights)
        state = random.getstate()
        random.seed(int(rng.integers(1 << 62)))
        try:
            steps = []
            for i in chosen:
                op = copy.copy(ra.ops[int(i)])
                op.aug_fn = record = _Record()
                op(None)  # timm's own draws: skip with 1 - p, magnitude noise, sign
                if record.args is not None:
                    steps.append((ra.ops[int(i)].aug_fn, *record.args))
            return steps
        finally:
            random.setstate(state)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        steps = self.plan(rng)
        if not steps:
            return clip
        out = np.empty_like(clip)
        for t, frame in enumerate(clip):
            img = Image.fromarray(frame)
            for fn, args, kwargs in steps:
                img = fn(img, *args, **dict(kwargs))  # a copy: timm's ops pop 'resample'
            out[t] = np.asarray(img.convert("RGB"))
        return out
