"""Synthetic motion-classification video set with real H.264 mp4s and a manifest.

Each clip: a dark random static texture with 2-4 bright random shapes (discs/squares, random
colour, size and position) that all move with one constant velocity on an open plane, entering
and leaving the frame. The class is the motion direction: class k -> angle 2*pi*k/num_classes
(+ small jitter); the speed (about 0.6 frame widths per clip) is random per clip and is
exported as the regression target `speed` (pixels per frame / frame size). No single frame
tells the class; only the motion does.

Side feature `feat_audio` (feature_dim floats): a noisy code of the class, independent of the
video pixels: a fixed random unit code per class (from the seed) + Gaussian noise of the same
norm, so it alone is informative but imperfect; a fraction `feature_missing` of clips has it null
(missing modality). It adds evidence independent of the pixels (its noise is independent of
the video's), so fusing it with the video can help where the motion is ambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from components.data.manifest import write_manifest

DATASET_NAME = "synthetic_motion"
FEATURE_COLUMN = "feat_audio"


def _codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _background(rng: np.random.Generator, size: int, contrast: float = 1.0) -> np.ndarray:
    """Static texture: a coarse random colour grid (blocky low frequencies) + fine noise."""
    cells = int(rng.integers(4, 9))
    # Darker than every shape (shapes are >= 170 per channel): motion then changes pixels with a
    # consistent sign, so even a linear read-out of frame differences can tell the direction.
    coarse = rng.integers(30, 131, size=(cells, cells, 3)).astype(np.float32)
    coarse = 80.0 + (coarse - 80.0) * contrast
    rep = -(-size // cells)  # ceil division
    bg = np.repeat(np.repeat(coarse, rep, axis=0), rep, axis=1)[:size, :size]  # (H, W, 3)
    bg += rng.normal(0.0, 12.0 * contrast, size=(size, size, 3)).astype(np.float32)
    return bg


def _render_clip(rng: np.random.Generator, label: int, num_classes: int, frames: int,
                 size: int, shapes: tuple[int, int] = (2, 4),
                 contrast: float = 1.0) -> tuple[np.ndarray, float]:
    """uint8 (T, H, W, 3) frames of class `label`, and the clip speed in px/frame."""
    bg = _background(rng, size, contrast)
    angle = 2 * math.pi * label / num_classes + rng.uniform(-1, 1) * math.pi / (4 * num_classes)
    # About 60% of the frame per clip: fast enough to see between sampled frames, slow enough
    # that a shape does not wrap all the way round (which would hide the direction from any
    # position-over-time readout).
    speed = float(rng.uniform(0.75, 1.25)) * max(1.5, 0.6 * size / frames)
    vel = np.array([math.sin(angle), math.cos(angle)]) * speed  # (dy, dx); y points down

    n_shapes = int(rng.integers(shapes[0], shapes[1] + 1))
    # Shapes travel on an open plane (no wrap-around, which would make a rightward shape jump
    # left). Mid-clip centres are uniform over the frame widened by half the travel, so shapes
    # enter and leave and any single frame shows them anywhere, whatever the direction.
    travel = speed * (frames - 1)
    centres = rng.uniform(-travel / 2, size + travel / 2, size=(n_shapes, 2))
    radii = rng.uniform(size / 12, size / 6, size=n_shapes)
    squares = rng.random(n_shapes) < 0.5
    colours = rng.integers(170, 256, size=(n_shapes, 3)).astype(np.float32)  # brighter than the background

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)  # (H, W) each
    out = np.empty((frames, size, size, 3), dtype=np.uint8)  # (T, H, W, C)
    for t in range(frames):
        img = bg.copy()
        for c, r, sq, col in zip(centres + vel * (t - (frames - 1) / 2), radii, squares, colours):
            dy, dx = yy - c[0], xx - c[1]
            mask = np.maximum(abs(dy), abs(dx)) <= r if sq else dy * dy + dx * dx <= r * r
            img[mask] = col
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out, speed


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as yuv420p mp4 (libx264, else mpeg4)."""
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"{path}: yuv420p needs even frame size, got {h}x{w}")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(_codec(), rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1  # single-threaded encoding: byte-identical output
        if stream.codec_context.name == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        else:
            stream.bit_rate = 4_000_000
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush delayed packets


def _write_corrupt(path: Path, kind: int, good: Path, rng: np.random.Generator) -> None:
    if kind == 0:  # truncated: first half of a valid mp4 (moov atom at the end is lost)
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == 1:  # zero-byte
        path.write_bytes(b"")
    else:  # random bytes
        path.write_bytes(rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())


def make_synthetic_dataset(out_dir: str | Path, num_classes: int = 4, clips_per_class: int = 12,
                           frames: int = 16, size: int = 64, fps: float = 8, seed: int = 0,
                           feature_dim: int = 8, val_fraction: float = 0.25, corrupt: int = 0,
                           feature_missing: float = 0.1, shapes: tuple[int, int] = (2, 4),
                           contrast: float = 1.0,
                           progress: Callable[[int, int], None] | bool | None = None) -> Path:
    """Write videos under out_dir/videos/ and out_dir/manifest.parquet; returns the manifest path.

    Rows: clip i has label i % num_classes; val split = round(clips_per_class * val_fraction)
    clips of each class (stratified, seeded). `corrupt=N` adds N broken train rows cycling
    truncated / zero-byte / random-bytes files. `progress(done, total)` or True to print.
    `shapes` is the (min, max) number of moving shapes; `contrast` scales the background texture
    (1 = full; lower makes the moving shapes stand out, an easier set for tiny models).
    """
    if num_classes < 2 or clips_per_class < 1 or frames < 2:
        raise ValueError("need num_classes >= 2, clips_per_class >= 1, frames >= 2")
    if size % 2:
        raise ValueError(f"size must be even for yuv420p, got {size}")
    out = Path(out_dir)
    vid_dir = out / "videos"
    vid_dir.mkdir(parents=True, exist_ok=True)
    def _print(done: int, total: int) -> None:
        print(f"synth: {done}/{total} clips", flush=True)

    report = _print if progress is True else (progress if callable(progress) else None)

    rng = np.random.default_rng(seed)
    # Fixed unit-norm class codes for the side feature.
    codes = rng.normal(size=(num_classes, max(feature_dim, 1)))
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    n_val = int(round(clips_per_class * val_fraction))
    val_rank = {k: set(rng.permutation(clips_per_class)[:n_val].tolist())
                for k in range(num_classes)}

    total = num_classes * clips_per_class
    rows: list[dict] = []
    for i in range(total):
        label, rank = i % num_classes, i // num_classes
        clip_rng = np.random.default_rng([seed, i])  # per-clip stream: reproducible in isolation
        video, speed = _render_clip(clip_rng, label, num_classes, frames, size, shapes, contrast)
        clip_id = f"synth_{i:05d}"
        rel = f"videos/{clip_id}.mp4"
        write_mp4(out / rel, video, fps)
        row = {"clip_id": clip_id, "video_path": rel, "split": "val" if rank in val_rank[label]
               else "train", "dataset": DATASET_NAME, "label": label,
               "regression": [speed / size]}
        if feature_dim > 0:
            missing = clip_rng.random() < feature_missing
            feat = codes[label] + clip_rng.normal(size=feature_dim) / math.sqrt(feature_dim)
            row[FEATURE_COLUMN] = None if missing else feat.astype(np.float32).tolist()
        rows.append(row)
        if report and (i + 1) % 50 == 0:
            report(i + 1, total)

    for j in range(corrupt):
        clip_id = f"corrupt_{j:03d}"
        rel = f"videos/{clip_id}.mp4"
        crng = np.random.default_rng([seed, total + j])
        _write_corrupt(out / rel, j % 3, out / rows[0]["video_path"], crng)
        row = {"clip_id": clip_id, "video_path": rel, "split": "train", "dataset": DATASET_NAME,
               "label": j % num_classes, "regression": [0.0]}
        if feature_dim > 0:
            row[FEATURE_COLUMN] = None
        rows.append(row)

    if report:
        report(total, total)
    class_names = [f"dir_{round(360 * k / num_classes)}deg" for k in range(num_classes)]
    feature_dims = {FEATURE_COLUMN: feature_dim} if feature_dim > 0 else {}
    return write_manifest(out / "manifest.parquet", rows, class_names, feature_dims=feature_dims,
                          regression_names=["speed"])
