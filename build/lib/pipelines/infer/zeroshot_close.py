"""Closing a training run with zero-shot evaluation on a held-out label set (config section `zeroshot`).

`prepare` runs before training, so a wrong key, a model kind without a text tower, a missing
manifest, classes file or split stops the run before anything trains. `evaluate` runs after fit: it
loads the run's final adapters into an M2-CLIP built for the held-out class names and scores the
split with `pipelines.infer.zeroshot.evaluate_zeroshot` (the code path of `vidpeft zeroshot`, same
multi-view averaging), then logs zeroshot_top1 / zeroshot_top5 / zeroshot_clips to the run's MLflow
run and returns them for metrics.json.

Where it runs: in one Ray task with a Train worker's resources (scaling.cpus_per_worker, and a GPU
when the run uses GPUs), not on the driver, which on a cluster is often a CPU-only head node or a
laptop. The weights travel as bytes through the object store, so the task needs no access to
OUTPUT_DIR; the videos must be readable where the decoder actors run, as for training.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from components.config import ConfigError, from_dict, to_dict
from components.model import model_kind, zero_shot_kinds
from pipelines.runtime import tracking
from pipelines.config import ExperimentConfig

PREFIX = "zeroshot_"


@dataclass
class HeldOut:
    """The validated held-out label set: class names, the split's rows, prompt templates."""

    names: list[str]
    table: pa.Table
    templates: list[str]


def prepare(cfg: ExperimentConfig) -> HeldOut | None:
    """None when `zeroshot.manifest` is empty; otherwise the checked label set (errors name the key)."""
    from pipelines.infer.zeroshot import check_templates, load_label_set

    z = cfg.zeroshot
    if not z.manifest:
        return None
    if not model_kind(cfg.model.kind).zero_shot:
        raise ConfigError(f"zeroshot.manifest is set but model.kind is {cfg.model.kind!r}: zero-shot over class "
                          f"names needs a text tower (model.kind: {' or '.join(zero_shot_kinds())}); "
                          f"unset zeroshot.manifest")
    check_templates(z.templates, "zeroshot.templates:")
    names, table = load_label_set(z.manifest, z.classes, z.split, cfg.data.check_files, split_hint="zeroshot.split")
    return HeldOut(names, table, list(z.templates))


def _zeroshot_task(config: dict, table: pa.Table, names: list[str], templates: list[str],
                   weights: bytes | None) -> dict:
    """Runs in a Ray task: build the model for the held-out names, load the adapters, evaluate."""
    import torch

    from components.model import build_model
    from pipelines.infer.zeroshot import evaluate_zeroshot

    cfg = from_dict(ExperimentConfig, config)
    if cfg.scaling.torch_threads > 0:
        torch.set_num_threads(cfg.scaling.torch_threads)
    model = build_model(cfg.model, len(names), names)
    loaded = 0
    if weights is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "weights.safetensors"
            path.write_bytes(weights)
            loaded = len(model.load_transfer_weights(str(path)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate_zeroshot(cfg, model, table, names, templates or None, device)
    result["adapters_loaded"] = loaded
    return result


def evaluate(cfg: ExperimentConfig, held_out: HeldOut, weights: Path, uri: str | None, run_id: str | None,
             step: int) -> dict:
    """Zero-shot with the trained weights; returns zeroshot_* metrics (also logged to MLflow at ``step``).
    A failure marks the MLflow run FAILED before it propagates."""
    import ray

    from pipelines.runtime.ray_env import use_gpu

    try:
        gpu = use_gpu(cfg.scaling.use_gpu)
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        # outside any placement group: inside a Tune trial (a campaign cell) the trial's group holds no CPU for it
        task = ray.remote(_zeroshot_task).options(num_cpus=cfg.scaling.cpus_per_worker, num_gpus=1 if gpu else 0,
                                                  scheduling_strategy=PlacementGroupSchedulingStrategy(None))
        blob = weights.read_bytes() if weights.is_file() else None
        result = ray.get(task.remote(to_dict(cfg), held_out.table, held_out.names, held_out.templates, blob))
        metrics = {f"{PREFIX}{k}": result[k] for k in ("top1", "top5", "clips", "skipped_clips", "classes", "views")
                   if k in result}
        if run_id:
            tracking.log_metrics(uri, run_id, metrics, step=step)
    except BaseException:
        if run_id:
            tracking.end_run(uri, run_id, status="FAILED")
        raise
    print(f"[vidpeft] zero-shot on {cfg.zeroshot.manifest} split {cfg.zeroshot.split}: {result['clips']} clips x "
          f"{result['views']} view(s), {len(held_out.names)} classes, {result['adapters_loaded']} trained "
          f"{'encoder' if cfg.model.finetune == 'full' else 'adapter'} tensors: "
          f"top1 {result.get('top1', float('nan')):.4f}  top5 {result.get('top5', float('nan')):.4f}", flush=True)
    return metrics
