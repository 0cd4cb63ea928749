"""Synthetic video sets with real H.264 mp4s and a manifest (`vidpeft synth`).

The scene of each clip comes from a task kind in `synth_scenes` (``motion``, the default:
several shapes moving one way over a texture, class = direction; ``appearance``: a static
white shape on black, class = shape x size, the demo's source task; ``motion_texture``:
coloured shapes crossing a texture, class = direction, the demo's target task; ``compositions``:
one shape crossing a texture, class = colour x shape x direction in words, the M2-CLIP demo's
captioned task). Every row also
carries the regression target `speed` (pixels per frame / frame size) and a `caption` in words.

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
from components.data.synth_scenes import TASKS

DATASET_NAME = "synthetic_motion"
FEATURE_COLUMN = "feat_audio"


def _codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


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
                           feature_missing: float = 0.1, shapes: tuple[int, int] | None = None,
                           contrast: float = 1.0, task: str = "motion",
                           progress: Callable[[int, int], None] | bool | None = None) -> Path:
    """Write videos under out_dir/videos/ and out_dir/manifest.parquet; returns the manifest path.

    Rows: clip i has label i % num_classes; val split = round(clips_per_class * val_fraction)
    clips of each class (stratified, seeded). `corrupt=N` adds N broken train rows cycling
    truncated / zero-byte / random-bytes files. `progress(done, total)` or True to print.
    `shapes` is the (min, max) number of moving shapes (None: the task's default); `contrast`
    scales the background texture (1 = full; lower makes the moving shapes stand out, an easier
    set for tiny models). `task` picks the scene (see `synth_scenes.TASKS`).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    render, class_names_of, default_shapes = TASKS[task]
    class_names = class_names_of(num_classes)
    num_classes = len(class_names)  # appearance and compositions have fixed class sets
    shapes = shapes or default_shapes
    dataset = DATASET_NAME if task == "motion" else f"synthetic_{task}"
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
        video, speed, caption = render(clip_rng, label, num_classes, frames, size, shapes=shapes, contrast=contrast)
        clip_id = f"synth_{i:05d}"
        rel = f"videos/{clip_id}.mp4"
        write_mp4(out / rel, video, fps)
        row = {"clip_id": clip_id, "video_path": rel, "split": "val" if rank in val_rank[label]
               else "train", "dataset": dataset, "label": label,
               "regression": [speed / size], "caption": caption}
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
        row = {"clip_id": clip_id, "video_path": rel, "split": "train", "dataset": dataset,
               "label": j % num_classes, "regression": [0.0], "caption": ""}
        if feature_dim > 0:
            row[FEATURE_COLUMN] = None
        rows.append(row)

    if report:
        report(total, total)
    feature_dims = {FEATURE_COLUMN: feature_dim} if feature_dim > 0 else {}
    return write_manifest(out / "manifest.parquet", rows, class_names, feature_dims=feature_dims,
                          regression_names=["speed"])
