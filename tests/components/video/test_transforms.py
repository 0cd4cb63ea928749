"""Clip augmentation, eval crops, multi-view evaluation and target-fps sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.synth import write_mp4
from components.video.decode import ClipSpec, decode_clip
from components.video.sampling import fps_indices, fps_multiview_indices
from components.video.transforms import (ClipAugment, center_crop, color_jitter, multi_crop,
                                         random_resized_crop_box)
from components.tasks import make_task
from components.tasks.base import average_probabilities
from components.video.views import ViewSpec, decode_views


def ramp_clip(t: int = 4, h: int = 40, w: int = 40) -> np.ndarray:
    """Pixel value = x coordinate (channel 0) and y coordinate (channel 1): crops are readable."""
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.stack([xx, yy, np.zeros_like(xx)], axis=-1).astype(np.uint8)
    return np.repeat(frame[None], t, axis=0)


def test_augment_is_seeded_and_one_crop_per_clip():
    clip = np.random.default_rng(0).integers(0, 256, (1, 48, 48, 3), dtype=np.uint8).repeat(6, axis=0)
    aug = ClipAugment(32, scale=(0.3, 1.0), flip=True, color_jitter=0.4)
    a = aug(clip, np.random.default_rng(7))
    b = aug(clip, np.random.default_rng(7))
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)  # same seed -> same clip
    assert not np.array_equal(a, aug(clip, np.random.default_rng(8)))
    # identical input frames stay identical: one crop, one flip, one colour change for the clip
    assert all(np.array_equal(a[0], a[t]) for t in range(1, 6))


def test_flip_mirrors_and_full_box_is_identity():
    clip = ramp_clip()
    aug = ClipAugment(40, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True)
    outs = [aug(clip, np.random.default_rng(s)) for s in range(12)]
    flipped = [np.array_equal(o, clip[:, :, ::-1]) for o in outs]
    kept = [np.array_equal(o, clip) for o in outs]
    assert any(flipped) and any(kept) and all(f or k for f, k in zip(flipped, kept))


@pytest.mark.parametrize("seed", range(20))
def test_random_resized_crop_box_respects_scale_and_ratio(seed):
    rng = np.random.default_rng(seed)
    y, x, h, w = random_resized_crop_box(60, 80, (0.25, 0.6), (0.75, 1.333), rng)
    assert 0 <= y and y + h <= 60 + 1e-9 and 0 <= x and x + w <= 80 + 1e-9
    assert 0.25 - 1e-9 <= h * w / (60 * 80) <= 0.6 + 1e-9
    assert 0.75 - 1e-9 <= w / h <= 1.333 + 1e-9


def test_color_jitter_zero_is_identity_and_stays_uint8():
    clip = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(color_jitter(clip, 0.0, np.random.default_rng(0)), clip)
    out = color_jitter(clip, 0.5, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == clip.shape and not np.array_equal(out, clip)


def test_center_and_multi_crop_positions():
    clip = ramp_clip(h=40, w=60)
    c = center_crop(clip, 20)
    assert c.shape == (4, 20, 20, 3) and c[0, 0, 0, 0] == 20 and c[0, 0, 0, 1] == 10
    three = multi_crop(clip, 20, 3)  # along the longer side (width): x = 0, 20, 40
    assert three.shape == (3, 4, 20, 20, 3)
    assert [int(v[0, 0, 0, 0]) for v in three] == [0, 20, 40]
    assert center_crop(ramp_clip(h=10, w=10), 20).shape == (4, 20, 20, 3)  # too small: resized up


def test_fps_sampling_keeps_seconds_per_clip():
    # 30 fps video sampled at 10 fps: every third frame, centred in the range
    idx = fps_indices(0, 100, 8, video_fps=30, target_fps=10)
    assert np.all(np.diff(idx) == 3) and idx[0] == (100 - 1 - 21) // 2
    rng_idx = fps_indices(0, 100, 8, 30, 10, rng=np.random.default_rng(0))
    assert np.all(np.diff(rng_idx) == 3) and 0 <= rng_idx[0] <= 99 - 21
    views = fps_multiview_indices(10, 50, 4, 3, video_fps=25, target_fps=12.5)
    assert views.shape == (3, 4) and views[0, 0] == 10 and views[-1, -1] == 49
    short = fps_indices(0, 5, 4, 30, 10)  # too short: the last frame repeats
    assert short.tolist() == [0, 3, 4, 4]


def test_views_decode_and_score_average(tmp_path):
    path = tmp_path / "v.mp4"
    write_mp4(path, np.random.default_rng(0).integers(0, 256, (24, 48, 48, 3), dtype=np.uint8), 8)
    spec = ClipSpec(num_frames=4, size=48)
    views = decode_views(path, spec, ViewSpec(num_clips=2, num_crops=3, crop_size=32))
    assert views.shape == (6, 4, 32, 32, 3)
    fps_spec = ClipSpec(num_frames=4, size=48, sampling="fps", target_fps=4)  # video at 8 fps
    assert decode_clip(path, fps_spec).shape == (4, 48, 48, 3)
    assert decode_views(path, fps_spec, ViewSpec(num_clips=2)).shape == (2, 4, 48, 48, 3)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 1.0]])  # 2 videos x 2 views
    avg = average_probabilities(make_task("single_label"), logits, 2)  # mean softmax
    assert torch.allclose(avg[0], torch.tensor([0.5, 0.5]))
    assert torch.allclose(avg.sum(dim=1), torch.ones(2))
    assert torch.allclose(average_probabilities(make_task("regression"), logits, 2)[1], torch.tensor([2.0, 1.0]))


def test_clip_decoder_augments_training_and_centre_crops_eval(synth_data):
    from components.data.manifest import read_manifest
    from pipelines.data.ingest import ClipDecoder, DecodeSettings

    rows = read_manifest(synth_data).split("val").slice(0, 3).to_pydict()
    batch = {k: np.array(v, dtype=object) for k, v in rows.items()}
    base = dict(num_frames=4, size=24, sampling="segment", stride=2, seed=0, task="single_label",
                num_outputs=4, augment=True, decode_scale=1.25, color_jitter=0.2)
    train = [ClipDecoder(DecodeSettings(training=True, **base))(batch) for _ in range(2)]
    assert train[0]["video"].shape == (3, 4, 24, 24, 3) and train[0]["ok"].all()
    assert np.array_equal(train[0]["video"], train[1]["video"])  # seeded per clip and visit
    ev = ClipDecoder(DecodeSettings(training=False, **base))(batch)
    assert ev["video"].shape == (3, 4, 24, 24, 3)
    full = decode_clip(rows["video_path"][0], ClipSpec(num_frames=4, size=30))
    assert np.array_equal(ev["video"][0], center_crop(full, 24))  # eval: centre of the larger decode


@pytest.mark.parametrize("override", ["crop_scale=[0.9, 0.5]", "color_jitter=1.5", "decode_scale=0.5",
                                      "train_sampling=fps"])
def test_data_config_rejects_bad_augmentation(override):
    from components.config import ConfigError, resolve
    from pipelines.config import DataConfig

    with pytest.raises(ConfigError):
        resolve(DataConfig, [], [override])
