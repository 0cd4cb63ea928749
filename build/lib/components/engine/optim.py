"""Building the optimizer and its schedule: AdamW over a model's parameter groups, warm-up + cosine."""

from __future__ import annotations

import torch
from torch import nn

from components.model_kind import ModelKind


def trainable_groups(model: nn.Module, lr: float) -> list:
    """The optimiser's parameter groups: a model kind's own ``param_groups(lr)`` (e.g. M2-CLIP's text side
    at its own LR); any other module's trainable parameters in one group. A model with nothing to train
    (a frozen zero-shot baseline) gets one dummy parameter, so epochs only evaluate."""
    if isinstance(model, ModelKind):
        groups = model.param_groups(lr)
    else:
        groups = [p for p in model.parameters() if p.requires_grad]
    return groups or [nn.Parameter(torch.zeros(1))]


def make_optimizer(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all tensors) where PyTorch has it for the parameters' device:
    on CPU it took ViT-B's optimizer step from 1.2-2.2 to 0.2-0.7 CPU s (benchmarks/README.md)."""
    kwargs = dict(lr=lr, weight_decay=weight_decay)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a dtype/device without a fused kernel
        return torch.optim.AdamW(params, **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float):
    """A per-optimizer-step schedule: warm-up from ``min_ratio`` x each group's LR to its LR over
    ``warmup_steps``, then cosine decay back to ``min_ratio`` x at ``total_steps``.

    torch's OneCycleLR (two phases, no momentum cycling): it scales every parameter group by its own
    LR, so groups declared at other LRs (M2-CLIP's text side) keep their ratio. Call ``step()`` after
    each optimizer step; ``step_scheduler`` stops at ``total_steps`` (the LR then stays at its floor).
    """
    if not 0 < min_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in (0, 1], got {min_ratio}")
    total = max(int(total_steps), 2)
    warmup = min(max(int(warmup_steps), 0), total - 2)  # steps until the peak LR is reached
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
        pct_start=(warmup + 1) / total if warmup else 0.0, anneal_strategy="cos", cycle_momentum=False,
        div_factor=1.0 / min_ratio, final_div_factor=1.0,
    )


def step_scheduler(scheduler) -> None:
    """Advance ``scheduler`` one optimizer step, holding its last LR once its planned steps are done
    (the step count per epoch is planned from the manifest; uneven shards may run a few more)."""
    total = getattr(scheduler, "total_steps", None)
    if total is None or scheduler.last_epoch < total - 1:
        scheduler.step()
