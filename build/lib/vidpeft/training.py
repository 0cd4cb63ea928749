"""``vidpeft.train``: one training run from Python, as `vidpeft train` runs it."""

from __future__ import annotations

from pathlib import Path


def train(config: str | Path | list[str | Path], overrides: list[str] | None = None, resume: bool = False) -> dict:
    """Train one run on Ray (a local instance unless ``scaling.ray_address`` names a cluster).

    ``config``: one experiment YAML or several (later ones win), each a path or a shipped name such as
    ``"demo"`` or ``"cm3t/mhva_pt"``; ``overrides``: ``"key=value"`` strings, as ``--set`` takes.
    Returns the run's final metrics (best epoch), with ``output_dir`` and the MLflow ``run_id``.
    Bad input raises ``components.config.ConfigError`` (or ``FileNotFoundError``) naming the key or file.

    >>> result = vidpeft.train("demo", ["data.manifest=demo_data/target/manifest.parquet"])  # doctest: +SKIP
    >>> result["val_top1"], result["output_dir"]  # doctest: +SKIP
    """
    from pipelines.cli.args import load_experiment
    from pipelines.run.train import run_train

    files = [config] if isinstance(config, (str, Path)) else list(config)
    cfg = load_experiment([str(f) for f in files], list(overrides or []))
    return run_train(cfg, resume=resume)
