"""Scoring with an exported ONNX graph (`vidpeft export --onnx`) in onnxruntime, as ``Scorer`` does with torch.

The graph's metadata holds the config and class names (``vidpeft_standalone``), so model.onnx alone is
enough: clips are decoded with the run's evaluation settings, several views of a video are flattened
into the batch and their outputs averaged by the task, exactly as ``Scorer.scores`` (the engine's
evaluation pass) does. An M2-CLIP graph scores its trained classes from the precomputed class texts;
other class names need the text tower, i.e. the run directory or the .safetensors export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components.config import ConfigError, from_dict
from pipelines.config import ExperimentConfig, saved_config
from pipelines.infer.predict_core import Scorer
from pipelines.infer.trained import STANDALONE_KEY, Trained


def is_onnx(source: str | Path) -> bool:
    return str(source).lower().endswith(".onnx")


def onnx_trained(path: str | Path) -> Trained:
    """The Trained description stored in an exported graph's metadata (one-line errors otherwise)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ConfigError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if STANDALONE_KEY not in meta:
        raise ConfigError(f"{path}: not a `vidpeft export --onnx` graph (no {STANDALONE_KEY} metadata)")
    data = json.loads(meta[STANDALONE_KEY])
    cfg = from_dict(ExperimentConfig, saved_config(data["config"], str(path)))
    return Trained(cfg, list(data.get("class_names") or []), list(data.get("target_names") or []), path,
                   standalone=True)


class OnnxScorer(Scorer):
    """``Scorer``'s interface (scores, rows, variant) over an onnxruntime session on CPU."""

    def __init__(self, path: str | Path, top_k: int = 5, threads: int = 0) -> None:
        import onnxruntime as ort

        self.trained = onnx_trained(path)
        self.task = self.trained.task
        self.templates = None
        self.modalities = [m.name for m in self.trained.cfg.model.modalities]
        if self.modalities:
            raise ConfigError(f"{path}: side modalities ({self.modalities}) are not inputs of the ONNX graph")
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._use(None, top_k)

    def variant(self, classes: list[str] | None = None, top_k: int | None = None) -> "Scorer":
        if classes:
            raise ConfigError("an ONNX graph scores its trained classes only (no text tower): serve the run "
                              "directory or the .safetensors export for other class names")
        return super().variant(None, top_k)

    def scores(self, video: np.ndarray, side: dict | None = None) -> np.ndarray:
        """(n, [V,] T, S, S, 3) uint8 -> (n, K) view-averaged probabilities (values for regression)."""
        import torch

        from components.engine.views import flatten_views

        flat, views = flatten_views({"video": torch.from_numpy(np.ascontiguousarray(video))})
        (logits,) = self.session.run(["logits"], {"video": flat["video"].numpy()})
        logits = torch.from_numpy(logits).float()
        if views > 1:
            logits = self.score_task.average_views(logits, views)
        return self.score_task.probabilities(logits).numpy()
