"""The engine: pure PyTorch training and evaluation shared by every verb (no Ray, no MLflow).

- ``optim.py``: the optimizer over a model's parameter groups, and its LR schedule.
- ``precision.py``: autocast and the fp16 gradient scaler for ``optim.amp``.
- ``step.py``: ``TrainStep``, one training step (accumulation, clipping, mixed precision).
- ``views.py``: several views per video flattened in, averaged out by the Task.
- ``loop.py``: ``run_pass`` (the one batch loop) and ``evaluate`` -> ``EvalResult``.

    from components.engine import evaluate
    result = evaluate(model, batches, model_task(cfg.model), device="cpu")
    result.metrics["top1"], result.scores, result.ids
"""

from components.engine.loop import EvalResult, PassResult, evaluate, run_pass
from components.engine.optim import lr_lambda, make_optimizer, make_scheduler, trainable_groups
from components.engine.precision import autocast_for, grad_scaler_for
from components.engine.step import TrainStep, unwrap
from components.engine.views import ViewAveraged, flatten_views, video_scores

__all__ = [
    "EvalResult", "PassResult", "TrainStep", "ViewAveraged", "autocast_for", "evaluate", "flatten_views",
    "grad_scaler_for", "lr_lambda", "make_optimizer", "make_scheduler", "run_pass", "trainable_groups",
    "unwrap", "video_scores",
]
