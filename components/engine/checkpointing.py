"""Activation (gradient) checkpointing of backbone blocks: ``model.grad_checkpointing``.

Each transformer block the backbone description names (``BackboneSpec.blocks``, so no attribute
paths per family) keeps only its inputs during the forward and recomputes its activations in the
backward. Frozen blocks are wrapped too: adapters inside them still need the activations, and those
dominate memory at 8-32 frames. The non-reentrant variant is used because a frozen block's input
may not require grad (the reentrant one would then drop the adapters' gradients). The block's
``forward`` is replaced on the instance, so parameter names and checkpoints are unchanged.
"""

from __future__ import annotations

from functools import wraps

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from components.backbones.spec import described, described_blocks


def backbone_blocks(model: nn.Module) -> list[nn.Module]:
    """Every transformer block of every described backbone inside ``model`` (each once)."""
    found: dict[int, nn.Module] = {}
    for owner, spec in described(model):
        for _, block in described_blocks(owner, spec):
            found.setdefault(id(block), block)
    return list(found.values())


def checkpointed(forward):
    """``forward`` run under non-reentrant checkpointing while gradients are on (``__wrapped__``: the original)."""
    @wraps(forward)
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():  # evaluation: nothing to save
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    run.vidpeft_checkpointed = True
    return run


def enable_grad_checkpointing(model: nn.Module) -> int:
    """Checkpoint every backbone block of ``model``; returns how many blocks (0 raises: the option
    would silently do nothing)."""
    blocks = backbone_blocks(model)
    if not blocks:
        raise ValueError("model.grad_checkpointing: this model has no described backbone blocks to checkpoint")
    for block in blocks:
        if not getattr(block.forward, "vidpeft_checkpointed", False):
            block.forward = checkpointed(block.forward)
    return len(blocks)
