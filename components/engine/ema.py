"""EMA of the trainable weights (``optim.ema_decay``): timm's ``ModelEmaV3`` over what trains.

``ModelEmaV3`` deep-copies the module it is given; handed the whole model it would copy the frozen
backbone too (a second ViT-B for a few MB of adapters). Here it is given a ``ParameterList`` of the
trainable parameters only (the same tensors the optimizer steps), so the copy is their shadow.
``update(step)`` after every optimizer step (timm's decay, with its warm-up when asked:
``1 - (1 + step) ** -3/4``, capped at ``decay``); ``applied(model)`` swaps the shadow into the
model for evaluation or saving and puts the trained weights back after; ``state_dict`` /
``load_state_dict`` carry the trained weights, the shadow and the update count through a checkpoint
(whose main weights file then holds the EMA weights: what evaluation and export use).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from timm.utils.model_ema import ModelEmaV3
from torch import nn


class TrainableEma:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.params = nn.ParameterList([p for p in model.parameters() if p.requires_grad])
        self.ema = ModelEmaV3(self.params, decay=decay, use_warmup=warmup, warmup_power=3 / 4)
        self.ema.requires_grad_(False)
        self.updates = 0

    def update(self) -> None:
        """After an optimizer step: the shadow moves towards the trained weights."""
        self.updates += 1
        self.ema.update(self.params, step=self.updates)

    @contextmanager
    def applied(self):
        """The model holds the EMA weights inside the block, its trained weights again after."""
        trained = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema.module.parameters()):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, t in zip(self.params, trained):
                    p.copy_(t)

    def state_dict(self) -> dict:
        """Take it outside ``applied``: ``trained`` must be the trained weights."""
        return {"trained": [p.detach().to("cpu", copy=True) for p in self.params],  # copies: not views
                "shadow": [e.detach().to("cpu", copy=True) for e in self.ema.module.parameters()],
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        copy_into(list(self.params), state["trained"])
        copy_into(list(self.ema.module.parameters()), state["shadow"])
        self.updates = int(state["updates"])


def copy_into(params: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
    """Saved tensors into ``params``, in order; a list that does not fit raises ValueError."""
    if len(saved) != len(params) or any(a.shape != b.shape for a, b in zip(saved, params)):
        raise ValueError("the checkpoint's EMA state does not match this model's trainable parameters")
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
