"""The engine: pure PyTorch training and evaluation shared by every verb (no Ray, no MLflow).

- ``optim.py``: the optimizer over a model's parameter groups, and its per-step LR schedule.
- ``checkpointing.py``: activation checkpointing of backbone blocks (``model.grad_checkpointing``).
- ``host_memory.py``: glibc malloc's mmap threshold on CPU (``scaling.host_mmap_mib``).
- ``precision.py``: autocast and the fp16 gradient scaler for ``optim.amp``.
- ``step.py``: ``TrainStep``, one training step (accumulation, clipping, mixed precision).
- regularisers: ``mix.py`` (mixup / cutmix / label smoothing), ``drop_path.py`` (stochastic depth),
  ``ema.py`` (EMA of the trainable weights), ``layer_decay.py`` (layer-wise LR decay).
- ``views.py``: several views per video flattened in, averaged out by the Task.
- ``health.py``: ``HealthWatch`` (collapse, flat loss, non-finite values) and ``GradProbe`` (dead modules).
- ``loop.py``: ``run_pass`` (the one batch loop) and ``evaluate`` -> ``EvalResult``.

    from components.engine import evaluate
    result = evaluate(model, batches, model_task(cfg.model), device="cpu")
    result.metrics["top1"], result.scores, result.ids
"""

from __future__ import annotations

import importlib

# name -> submodule. Imported on first use (PEP 562): the data path imports ``components.engine.views``
# in Ray Data's decoder actors, which start afresh every epoch, and must not pay for the model stack
# (timm, open_clip, adapters) that ``loop``/``step`` import.
_EXPORTS = {
    "EvalResult": "loop", "PassResult": "loop", "evaluate": "loop", "run_pass": "loop",
    "backbone_blocks": "checkpointing", "enable_grad_checkpointing": "checkpointing",
    "make_optimizer": "optim", "make_scheduler": "optim", "step_scheduler": "optim", "trainable_groups": "optim",
    "optimizer_for": "optim", "split_weight_decay": "optim", "scaled_lr": "optim",
    "apply_mmap_threshold": "host_memory", "mallinfo": "host_memory", "mmap_threshold_mib": "host_memory",
    "set_mmap_threshold": "host_memory",
    "autocast_for": "precision", "grad_scaler_for": "precision",
    "TrainStep": "step", "unwrap": "step",
    "ClipMix": "mix", "enable_drop_path": "drop_path", "TrainableEma": "ema", "layer_decay_groups": "layer_decay",
    "GradProbe": "health", "HealthWatch": "health", "Verdict": "health", "prediction_share": "health",
    "ViewAveraged": "views", "flatten_views": "views", "video_scores": "views",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
