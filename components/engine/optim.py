"""Building the optimizer and its schedule: AdamW over a model's parameter groups, warm-up + cosine."""

from __future__ import annotations

import math

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


def lr_lambda(epochs: int, warmup: int, min_ratio: float):
    """Per-epoch multiplier: linear warm-up, then cosine down to ``min_ratio``."""

    def f(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(epochs - warmup, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def make_scheduler(optimizer: torch.optim.Optimizer, epochs: int, warmup: int, min_ratio: float):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(epochs, warmup, min_ratio))
