"""Building the optimizer and its schedule: AdamW over a model's parameter groups, warm-up + cosine."""

from __future__ import annotations

import re

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


# Parameters that get no weight decay under ``optim.no_decay`` besides every 0-/1-d one: biases (MHVA's
# are per group, 2-d), gates and scales by name, and embeddings that are positions or prefixes, not maps.
NO_DECAY_NAMES = re.compile(r"(bias|gate|scale)$|pos_embed|positional_embedding|cls_token|class_embedding"
                            r"|relative_position_bias_table|(^|\.)embedding\.weight$")


def decay_exempt(name: str, param: nn.Parameter) -> bool:
    """True for a parameter the usual recipes do not decay: biases, norms, gates, scales, embeddings."""
    return param.ndim <= 1 or bool(NO_DECAY_NAMES.search(name))


def split_weight_decay(model: nn.Module, groups: list, weight_decay: float) -> list[dict]:
    """``groups`` (``trainable_groups``' dicts or bare parameters) with each split in two: its decayed
    parameters at ``weight_decay`` and the ``decay_exempt`` ones at 0 (each keeps its other settings)."""
    names = {id(p): n for n, p in model.named_parameters()}
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": list(groups)}]
    out = []
    for group in groups:
        params = list(group["params"])
        exempt = [p for p in params if decay_exempt(names.get(id(p), ""), p)]
        decayed = [p for p in params if not any(p is q for q in exempt)]
        for part, wd in ((decayed, weight_decay), (exempt, 0.0)):
            if part:
                out.append({**group, "params": part, "weight_decay": wd})
    return out


def scaled_lr(lr: float, global_batch: int, base_batch: int) -> float:
    """The linear scaling rule: ``lr`` given per ``base_batch`` clips, used at ``global_batch`` (0 = as given)."""
    return lr * global_batch / base_batch if base_batch > 0 else lr


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


def optimizer_for(model: nn.Module, optim, global_batch: int) -> tuple[torch.optim.Optimizer, float]:
    """AdamW for ``model`` as an ``optim`` config section asks (its lr, weight_decay, no_decay,
    layer_decay and lr_base_batch; global_batch = clips per optimizer step over all workers): (optimizer, the lr used)."""
    lr = scaled_lr(optim.lr, global_batch, optim.lr_base_batch)
    groups = trainable_groups(model, lr)
    if optim.no_decay:
        groups = split_weight_decay(model, groups, optim.weight_decay)
    layer_decay = getattr(optim, "layer_decay", 1.0)
    if layer_decay != 1:  # each group split further by depth, keeping its own settings (weight decay)
        from components.engine.layer_decay import layer_decay_groups

        groups = layer_decay_groups(model, groups, layer_decay, lr)
    return make_optimizer(groups, lr, optim.weight_decay), lr
