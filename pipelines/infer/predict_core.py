"""Prediction without Ray: decode a video (or a window of it) as the run evaluates, score it, top-k rows.

Used by the Ray Data actors of `vidpeft predict` (pipelines/infer/predict.py) and, in-process, by the MLflow
pyfunc model (pipelines/infer/mlflow_model.py), so both give the same scores for the same file. A video is
decoded with the run's evaluation settings (sampling, size, data.eval_clips x eval_crops views) and its
views' scores are averaged (softmax / sigmoid probabilities, regression values) before top-k.

The prediction table, one row per video or per window:
  clip_id, video_path, start_sec, end_sec (window; null = the whole clip), label (top-1 name; null for
  regression), score (its probability), top_k_labels, top_k_scores (for regression: every target's name
  and predicted value, in target order), error (null, or why the video could not be decoded).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.io.cache import node_fetch
from components.video.decode import ClipSpec, VideoDecodeError, decode_clip, probe_video
from components.video.transforms import center_crop
from components.video.views import decode_views

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")

SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video_path", pa.string()), ("start_sec", pa.float64()), ("end_sec", pa.float64()),
    ("label", pa.string()), ("score", pa.float64()), ("top_k_labels", pa.list_(pa.string())),
    ("top_k_scores", pa.list_(pa.float64())), ("error", pa.string()),
])


def eval_settings(cfg):
    """The run's evaluation decoding, without targets or side columns (raw videos have neither)."""
    from pipelines.data.ingest import decode_settings

    return replace(decode_settings(cfg, training=False), datasets=())


def window_ranges(path: str, window_sec: float, stride_sec: float, decoder: str = "decord",
                  fallback: str | None = None, fetch=None) -> list[tuple[float, float]]:
    """[start, end) windows of ``window_sec`` every ``stride_sec`` covering the video; the last one
    ends at the video's end (a video shorter than a window is one window). ``fetch``: how a remote
    video's bytes are read (the node's cache, ``ClipReader.decoders``)."""
    n, fps, _, _ = probe_video(path, decoder, fallback, fetch=fetch)
    duration = n / fps if fps > 0 else 0.0
    if duration <= window_sec:
        return [(0.0, duration)]
    starts = list(np.arange(0.0, duration - window_sec + 1e-9, stride_sec))
    if starts[-1] + window_sec < duration - 1e-6:  # do not drop the tail
        starts.append(duration - window_sec)
    return [(round(float(s), 6), round(float(s) + window_sec, 6)) for s in starts]


class ClipReader:
    """One clip of a video -> uint8 (T, S, S, 3), or (V, T, S, S, 3) with several evaluation views."""

    def __init__(self, settings) -> None:
        from pipelines.data import eval_views

        self.s = settings
        self.views = eval_views.view_decoding(settings)
        self.spec = ClipSpec(num_frames=settings.num_frames, size=settings.decode_size, sampling=settings.sampling,
                             stride=settings.stride, target_fps=settings.target_fps)
        # data.decoder and data.decoder_fallback of the run (for decode_clip / probe_video)
        self.decoders = {"decoder": settings.decoder, "fallback": settings.decoder_fallback or None,
                         "fetch": node_fetch(settings.cache_dir, settings.cache_bytes)}

    @property
    def shape(self) -> tuple[int, ...]:
        views = (self.views[1].num_views,) if self.views else ()
        return (*views, self.s.num_frames, self.s.size, self.s.size, 3)

    def __call__(self, path: str, **ranges) -> np.ndarray:
        if self.views:
            return decode_views(path, *self.views, **self.decoders, **ranges)
        clip = decode_clip(path, self.spec, **self.decoders, **ranges)
        return center_crop(clip, self.s.size) if self.s.augment else clip


def check_open_vocabulary(trained, classes: bool, source: str = "") -> None:
    """Other class names (``--classes``) need an M2-CLIP run; the driver checks before Ray starts."""
    from components.model import model_kind, zero_shot_kinds

    if classes and not model_kind(trained.cfg.model.kind).zero_shot:
        from components.config import ConfigError

        raise ConfigError(f"--classes needs a run with a text tower (model.kind: {' or '.join(zero_shot_kinds())}), "
                          f"{source or 'this one'} is "
                          f"{trained.cfg.model.kind!r}: it can only predict its own classes")


class Scorer:
    """A trained model (pipelines.infer.trained) -> per-clip probabilities and top-k rows.

    ``classes``: other class names for an M2-CLIP model (open vocabulary, scored by Eq. 11).
    """

    def __init__(self, trained, device: str = "cpu", classes: list[str] | None = None, top_k: int = 5,
                 templates: list[str] | None = None) -> None:
        import torch

        from pipelines.infer.trained import build_trained

        check_open_vocabulary(trained, bool(classes))
        self.trained, self.task = trained, trained.task
        self.templates = templates
        self.device = torch.device(device)
        self.model = build_trained(trained, self.device)
        self.modalities = [m.name for m in trained.cfg.model.modalities]
        self._use(classes, top_k)

    def _use(self, classes: list[str] | None, top_k: int) -> None:
        from components.tasks import make_task, model_task

        self.classes = list(classes) if classes else None
        self.names = self.classes or self.trained.output_names
        self.top_k = max(1, min(top_k, len(self.names)))
        # open vocabulary: M2-CLIP's Eq. 11 over the given names, scored as a single-label task
        self.score_task = make_task("single_label", len(self.names)) if self.classes else model_task(self.trained.cfg.model)
        self.forward = None
        if self.classes:
            self.forward = lambda flat: {"logits": self.model.zero_shot_logits(flat["video"], self.classes,
                                                                              self.templates)}

    def variant(self, classes: list[str] | None = None, top_k: int | None = None) -> "Scorer":
        """The same model over other class names (M2-CLIP) and/or another top-k (a request of `vidpeft serve`)."""
        import copy

        check_open_vocabulary(self.trained, bool(classes))
        other = copy.copy(self)
        other._use(classes or self.classes, top_k or self.top_k)
        return other

    def scores(self, video: np.ndarray, side: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(n, [V,] T, S, S, 3) uint8 -> (n, K) view-averaged probabilities (values for regression), by the
        engine's evaluation pass (the one `vidpeft evaluate` and training's validation run)."""
        import torch

        from components.engine import evaluate

        batch = {"video": torch.from_numpy(np.ascontiguousarray(video))}
        for name, (feat, present) in (side or {}).items():
            batch[f"side_{name}"], batch[f"side_{name}_mask"] = torch.from_numpy(feat), torch.from_numpy(present)
        r = evaluate(self.model, [batch], self.score_task, self.device, self.trained.cfg.optim.amp,
                     forward=self.forward)
        return r.scores.numpy()  # (n, K)

    def rows(self, meta: list[dict], scores: np.ndarray) -> list[dict]:
        """Prediction-table rows for ``meta`` (clip_id, video_path, start_sec, end_sec) and their scores."""
        out = []
        for m, s in zip(meta, scores):
            if not self.trained.has_classes and not self.classes:
                labels, values, label, score = list(self.names), [float(v) for v in s], None, None
            else:
                top = np.argsort(-s, kind="stable")[: self.top_k]
                labels, values = [self.names[i] for i in top], [float(s[i]) for i in top]
                label, score = labels[0], values[0]
            out.append({**m, "label": label, "score": score, "top_k_labels": labels, "top_k_scores": values,
                        "error": None})
        return out


def failed_row(meta: dict, error: str) -> dict:
    return {**meta, "label": None, "score": None, "top_k_labels": [], "top_k_scores": [], "error": error}


def predict_local(scorer: Scorer, paths: list[str], window_sec: float = 0.0, stride_sec: float = 0.0,
                  batch_size: int = 8) -> pa.Table:
    """In-process prediction over video files (the MLflow model's path): a table in SCHEMA."""
    reader = ClipReader(eval_settings(scorer.trained.cfg))
    rows: list[dict | None] = []  # in input order; None = waiting for its batch
    pending, clips = [], []  # (row index, meta), decoded clip

    def flush():
        if pending:
            scored = scorer.rows([m for _, m in pending], scorer.scores(np.stack(clips)))
            for (i, _), row in zip(pending, scored):
                rows[i] = row
            pending.clear()
            clips.clear()

    for path in paths:
        path = str(path)
        try:
            ranges = (window_ranges(path, window_sec, stride_sec or window_sec, **reader.decoders) if window_sec
                      else [(None, None)])
        except VideoDecodeError as e:
            rows.append(failed_row(_meta(path), str(e)))
            continue
        for start, end in ranges:
            meta = _meta(path, start, end)
            try:
                clips.append(reader(path, start_sec=start, end_sec=end))
            except VideoDecodeError as e:
                rows.append(failed_row(meta, str(e)))
                continue
            pending.append((len(rows), meta))
            rows.append(None)
            if len(pending) >= batch_size:
                flush()
    flush()
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _meta(path: str, start: float | None = None, end: float | None = None, clip_id: str | None = None) -> dict:
    return {"clip_id": clip_id or Path(path).stem, "video_path": path,
            "start_sec": None if start is None or math.isnan(start) else float(start),
            "end_sec": None if end is None or math.isnan(end) else float(end)}
