"""``vidpeft.load``: a trained model (a run directory or an export) with ``predict`` and ``evaluate``."""

from __future__ import annotations

from pathlib import Path


class Model:
    """A trained vidpeft model, rebuilt in this process (weights loaded with the safe readers only).

    ``predict`` runs here, on ``device`` (videos decoded as the run evaluates them); ``evaluate`` runs
    `vidpeft evaluate` (on Ray, fed by its decoder actors) and returns its result.
    """

    def __init__(self, source: str | Path, device: str = "cpu", backbone_checkpoint: str | None = None) -> None:
        from pipelines.infer.trained import load_trained

        self.source = str(source)
        self.device = device
        self.backbone_checkpoint = backbone_checkpoint
        self.trained = load_trained(source, backbone_checkpoint)
        self._scorers: dict = {}

    @property
    def classes(self) -> list[str]:
        """What each output means: class names (or regression target names)."""
        return list(self.trained.output_names)

    @property
    def config(self):
        """The run's resolved experiment config (``pipelines.config.ExperimentConfig``)."""
        return self.trained.cfg

    def __repr__(self) -> str:
        c = self.trained.cfg.model
        return (f"vidpeft.Model({self.source!r}: {c.kind}, {c.backbone.family} {c.backbone.name}, "
                f"{len(self.classes)} outputs, task {self.trained.task})")

    def _scorer(self, top_k: int, classes: tuple[str, ...] | None):
        from pipelines.infer.predict_core import Scorer

        key = (top_k, classes)
        if key not in self._scorers:
            self._scorers[key] = Scorer(self.trained, self.device, classes=list(classes) if classes else None,
                                        top_k=top_k)
        return self._scorers[key]

    def predict(self, videos: str | Path | list[str | Path], top_k: int = 5, classes: list[str] | None = None,
                window_sec: float = 0.0, stride_sec: float = 0.0, batch_size: int = 8) -> list[dict]:
        """One row per video (per window with ``window_sec``): ``label``, ``score``, ``top_k_labels``,
        ``top_k_scores``; a video that cannot be decoded gets ``error`` instead of labels.
        ``classes``: other class names, for a model with a text tower (M2-CLIP: open vocabulary).

        >>> model = vidpeft.load("runs/demo/adapters_frames")  # doctest: +SKIP
        >>> model.predict(["a.mp4"], top_k=3)[0]["top_k_labels"]  # doctest: +SKIP
        """
        from pipelines.infer.predict_core import predict_local

        paths = [videos] if isinstance(videos, (str, Path)) else list(videos)
        scorer = self._scorer(top_k, tuple(classes) if classes else None)
        return predict_local(scorer, [str(p) for p in paths], window_sec, stride_sec, batch_size).to_pylist()

    def evaluate(self, manifest: str | Path | None = None, split: str = "test", clips: int | None = None,
                 crops: int | None = None, out: str | Path | None = None, log: bool = False) -> dict:
        """`vidpeft evaluate` on ``manifest``'s ``split`` (default: the run's own manifest): metrics,
        per-class accuracy and the confusion matrix for single-label runs. ``log``: also into the run's
        MLflow run."""
        from pipelines.infer.evaluate import run_evaluate

        return run_evaluate(self.source, str(manifest) if manifest else None, split, clips, crops,
                            self.backbone_checkpoint, str(out) if out else None, log=log)


def load(source: str | Path, device: str = "cpu", backbone_checkpoint: str | None = None) -> Model:
    """A run directory (`vidpeft train` output) or a standalone export (`vidpeft export`) as a ``Model``.
    ``backbone_checkpoint``: where the frozen backbone's weights are now, when the run has moved."""
    return Model(source, device, backbone_checkpoint)
