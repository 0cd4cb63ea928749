"""Synthetic motion set, decoding, and frame samplers."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.data.manifest import read_manifest
from components.data.synth import make_synthetic_dataset, write_mp4
from components.video.decode import ClipSpec, VideoDecodeError, decode_clip, probe_video
from components.video.decoders.decord_backend import get_batch as _get_batch
from components.video.sampling import (multiview_indices, segment_indices, strided_indices,
                                       uniform_indices)

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), num_classes=NUM_CLASSES,
                                  clips_per_class=4, frames=16, size=64, fps=8, seed=3, corrupt=3)


def _rows(manifest_path: Path) -> list[dict]:
    return read_manifest(manifest_path).table.to_pylist()


# ---------------------------------------------------------------- synthetic set

def test_synthetic_deterministic_per_seed(synth: Path, tmp_path: Path) -> None:
    again = make_synthetic_dataset(tmp_path / "a", num_classes=NUM_CLASSES, clips_per_class=4,
                                   frames=16, size=64, fps=8, seed=3, corrupt=3)
    assert pq.read_table(again).equals(pq.read_table(synth))
    spec = ClipSpec(num_frames=16, size=None)
    for name in ("synth_00000.mp4", "synth_00007.mp4"):
        a = decode_clip(synth.parent / "videos" / name, spec)
        b = decode_clip(again.parent / "videos" / name, spec)
        assert np.array_equal(a, b)
    other = make_synthetic_dataset(tmp_path / "b", num_classes=NUM_CLASSES, clips_per_class=4,
                                   frames=16, size=64, fps=8, seed=4)
    assert not np.array_equal(decode_clip(other.parent / "videos" / "synth_00000.mp4", spec),
                              decode_clip(synth.parent / "videos" / "synth_00000.mp4", spec))


def test_synthetic_manifest_contents(synth: Path) -> None:
    m = read_manifest(synth, required_columns=("label",), feature_columns=("feat_audio",))
    assert m.num_classes == NUM_CLASSES and m.feature_dims == {"feat_audio": 8}
    assert m.regression_names == ["speed"]
    s = m.summary()
    assert s["splits"] == {"train": 12 + 3, "val": 4}  # 3 corrupt rows are in train
    val = m.split("val")["label"].to_pylist()
    assert sorted(val) == list(range(NUM_CLASSES))  # stratified: one val clip per class


def _displacement(clip: np.ndarray, max_shift: int = 8, thr: float = 25.0) -> np.ndarray:
    """Mean frame-to-frame (dy, dx) of the moving shapes: foreground masks (pixels far from
    the per-pixel temporal median, i.e. the static background) matched by IoU over circular
    shifts (shapes wrap around the edges, so circular shifts model the motion exactly)."""
    x = clip.astype(np.float32)  # (T, H, W, C)
    fg = (np.abs(x - np.median(x, axis=0, keepdims=True)).max(-1) > thr).astype(np.float32)
    shifts = [(dy, dx) for dy in range(-max_shift, max_shift + 1)
              for dx in range(-max_shift, max_shift + 1)]
    best = []
    for t in range(len(fg) - 1):  # fg: (T, H, W)
        moved = [np.roll(fg[t], s, axis=(0, 1)) for s in shifts]
        iou = [(m * fg[t + 1]).sum() / max(np.maximum(m, fg[t + 1]).sum(), 1.0) for m in moved]
        best.append(shifts[int(np.argmax(iou))])
    return np.mean(best, axis=0)


def test_motion_defines_class(synth: Path) -> None:
    rows = [r for r in _rows(synth) if r["clip_id"].startswith("synth")][:8]
    spec = ClipSpec(num_frames=16, size=64, sampling="strided", stride=1)
    first_frames = []
    for r in rows:
        clip = decode_clip(r["video_path"], spec)
        first_frames.append(clip[0].astype(np.float32))
        dy, dx = _displacement(clip)
        assert math.hypot(dy, dx) >= 0.5, ("no visible motion", r["clip_id"], dy, dx)
        expected = 2 * math.pi * r["label"] / NUM_CLASSES  # class k moves at angle 2*pi*k/K
        err = (math.atan2(dy, dx) - expected + math.pi) % (2 * math.pi) - math.pi
        assert abs(err) < math.pi / 4, (r["clip_id"], r["label"], dy, dx)
    # A single frame does not carry the class: same-class first frames differ as much as
    # different-class ones (random texture, shapes and colours per clip).
    f = np.stack(first_frames)
    labels = np.array([r["label"] for r in rows])
    d = np.abs(f[:, None] - f[None]).mean(axis=(2, 3, 4))
    same = d[(labels[:, None] == labels[None]) & ~np.eye(len(rows), dtype=bool)].mean()
    diff = d[labels[:, None] != labels[None]].mean()
    assert same > 0.7 * diff


# ---------------------------------------------------------------- decoding

def test_decode_shape_dtype_and_probe(synth: Path) -> None:
    path = synth.parent / "videos" / "synth_00001.mp4"
    assert probe_video(path) == (16, 8.0, 64, 64)
    clip = decode_clip(path, ClipSpec(num_frames=8, size=32, sampling="segment"),
                       rng=np.random.default_rng(0))
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    views = decode_clip(path, ClipSpec(num_frames=4, size=32),
                        indices_fn=lambda s, e: multiview_indices(s, e, 4, 3))
    assert views.shape == (3, 4, 32, 32, 3)


def test_corrupt_files_raise_naming_path(synth: Path, tmp_path: Path) -> None:
    bad = [r["video_path"] for r in _rows(synth) if r["clip_id"].startswith("corrupt")]
    missing = str(tmp_path / "missing.mp4")
    assert len(bad) == 3
    for path in bad + [missing]:
        with pytest.raises(VideoDecodeError) as info:
            decode_clip(path, ClipSpec())
        assert path in str(info.value) and info.value.path == path
        assert isinstance(info.value, RuntimeError)
        with pytest.raises(VideoDecodeError):
            probe_video(path)
    err = pickle.loads(pickle.dumps(VideoDecodeError("/x.mp4", "empty")))
    assert str(err) == "/x.mp4: empty"


def _counter_video(tmp_path: Path, frames: int = 16, fps: float = 8) -> Path:
    """Frame i is a flat grey of value 10 * i + 20, so decoded frames reveal their index."""
    video = np.stack([np.full((32, 32, 3), 10 * i + 20, np.uint8) for i in range(frames)])
    path = tmp_path / "counter.mp4"
    write_mp4(path, video, fps)
    return path


def _frame_ids(clip: np.ndarray) -> list[int]:
    return [int(round((float(f.mean()) - 20) / 10)) for f in clip]


def test_frame_and_seconds_ranges(tmp_path: Path) -> None:
    path = _counter_video(tmp_path)
    spec = ClipSpec(num_frames=4, size=None, sampling="uniform")
    assert _frame_ids(decode_clip(path, spec)) == [2, 6, 10, 14]
    assert _frame_ids(decode_clip(path, spec, start_frame=4, end_frame=8)) == [4, 5, 6, 7]
    # 8 fps: [1.0 s, 1.5 s) -> frames [8, 12)
    assert _frame_ids(decode_clip(path, spec, start_sec=1.0, end_sec=1.5)) == [8, 9, 10, 11]
    assert _frame_ids(decode_clip(path, spec, start_sec=1.5)) == [12, 13, 14, 15]
    # Frames take precedence over seconds; ranges past the end are clamped to the video.
    assert _frame_ids(decode_clip(path, spec, start_frame=0, end_frame=2,
                                  start_sec=1.0, end_sec=2.0)) == [0, 0, 1, 1]
    assert _frame_ids(decode_clip(path, spec, start_frame=14, end_frame=40)) == [14, 14, 15, 15]
    with pytest.raises(VideoDecodeError, match="counter.mp4: frame range"):
        decode_clip(path, spec, start_sec=5.0, end_sec=6.0)


@pytest.mark.parametrize("size", [None, 48, 24, 16, 40, 64])
def test_output_widths_decord_cannot_produce(tmp_path: Path, size: int | None) -> None:
    """decord 0.6 fails on some output widths (48, 24, 16...); decode_clip must still work."""
    video = np.full((6, 32, 48, 3), 40, np.uint8)  # (T, H, W, C), native width 48
    video[:, :, :24] = 200  # bright left half
    video[:, 16:, 24:] += (10 * np.arange(6, dtype=np.uint8))[:, None, None, None]
    path = tmp_path / "w48.mp4"
    write_mp4(path, video, 8)
    clip = decode_clip(path, ClipSpec(num_frames=3, size=size))
    h, w = (32, 48) if size is None else (size, size)
    assert clip.shape == (3, h, w, 3) and clip.dtype == np.uint8
    assert abs(float(clip[:, :, : w // 4].mean()) - 200) < 6
    assert abs(float(clip[:, : h // 4, -(w // 4):].mean()) - 40) < 6
    corner = clip[:, -(h // 4):, -(w // 4):].astype(np.float32)  # holds 40 + 10 * frame index
    assert [round((float(f.mean()) - 40) / 10) for f in corner] == [1, 3, 5]  # uniform 6 -> 3


class _FlakyReader:
    """Reports one more frame than it can decode, like some real containers."""

    def __init__(self, n: int, bad_tail: int = 1) -> None:
        self.n, self.bad_tail = n, bad_tail

    def __len__(self) -> int:
        return self.n

    def get_batch(self, idx: np.ndarray) -> np.ndarray:
        if np.max(idx) >= self.n - self.bad_tail:
            raise RuntimeError("cannot decode last frame")
        return np.stack([np.full((2, 2, 3), i, np.uint8) for i in idx])


def test_last_frame_fallback() -> None:
    out = _get_batch(_FlakyReader(10), np.array([0, 5, 9]), "/v.mp4")
    assert out[:, 0, 0, 0].tolist() == [0, 5, 8]
    with pytest.raises(VideoDecodeError, match="/v.mp4: decode failed"):
        _get_batch(_FlakyReader(1), np.array([0]), "/v.mp4")  # nothing lower to retry
    with pytest.raises(VideoDecodeError, match="/v.mp4: decode failed"):
        _get_batch(_FlakyReader(10, bad_tail=2), np.array([2, 9]), "/v.mp4")  # one retry only
    with pytest.raises(VideoDecodeError, match="/v.mp4: decode failed"):
        _get_batch(_FlakyReader(10, bad_tail=5), np.array([6]), "/v.mp4")  # not the last index



# ---------------------------------------------------------------- samplers

@pytest.mark.parametrize("start,end", [(0, 1), (3, 5), (10, 17), (0, 300), (5, 13)])
@pytest.mark.parametrize("t", [1, 4, 8, 16])
def test_samplers_stay_in_range(start: int, end: int, t: int) -> None:
    rng = np.random.default_rng(0)
    outs = [uniform_indices(start, end, t), segment_indices(start, end, t, rng),
            strided_indices(start, end, t, 2), strided_indices(start, end, t, 3, rng),
            multiview_indices(start, end, t, 3), multiview_indices(start, end, t, 2, stride=2)]
    for idx in outs:
        assert idx.dtype == np.int64 and idx.shape[-1] == t
        assert idx.min() >= start and idx.max() < end
        assert (np.diff(idx, axis=-1) >= 0).all()  # time order preserved
    assert outs[4].shape == (3, t)


def test_sampler_values() -> None:
    assert uniform_indices(0, 16, 4).tolist() == [2, 6, 10, 14]
    assert uniform_indices(10, 12, 4).tolist() == [10, 10, 11, 11]  # short range repeats
    assert strided_indices(0, 20, 4, 2).tolist() == [6, 8, 10, 12]  # centred
    assert strided_indices(0, 5, 4, 2).tolist() == [0, 2, 4, 4]  # clamped, stride kept
    assert multiview_indices(0, 16, 4, 1).tolist() == [uniform_indices(0, 16, 4).tolist()]
    assert multiview_indices(0, 20, 4, 2, stride=2).tolist() == [[0, 2, 4, 6], [13, 15, 17, 19]]
    seg = segment_indices(0, 16, 4, np.random.default_rng(0))
    assert all(4 * k <= i < 4 * (k + 1) for k, i in enumerate(seg))  # one per segment
    a = segment_indices(0, 100, 8, np.random.default_rng(42))
    b = segment_indices(0, 100, 8, np.random.default_rng(42))
    assert np.array_equal(a, b)
    draws = {tuple(segment_indices(0, 100, 8, np.random.default_rng(s))) for s in range(5)}
    assert len(draws) > 1
    with pytest.raises(ValueError):
        uniform_indices(5, 5, 4)
