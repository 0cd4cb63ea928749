"""One training step: forward under autocast, backward, and (every ``accumulate`` micro-batches)
unscale, clip, optimizer step. Every training caller (the Ray Train worker, the benchmarks) runs this.

Hooks: ``accumulate`` > 1 sums gradients over that many calls before stepping (each loss divided by
it, so the step sees the mean) and, under DistributedDataParallel, runs the non-final micro-batches
inside ``no_sync()`` so gradients are all-reduced once per optimizer step, not per micro-batch; ``grad_clip`` > 0 clips the global gradient norm; ``amp`` selects
autocast (bf16 / fp16 / auto) and fp16 gets a GradScaler; ``scheduler`` (per-step LR) advances
after every optimizer step; ``transform`` (mixup / cutmix / label smoothing, ``mix.py``) rewrites each
training batch before its forward; ``ema`` (``ema.py``) is updated after every optimizer step. A batch
whose clips were all
unreadable still runs forward and backward with its loss times zero (``live=False``), so
data-parallel workers stay in step; it contributes nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from contextlib import nullcontext

from components.engine.optim import step_scheduler
from components.engine.precision import autocast_for, grad_scaler_for


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a data-parallel wrapper (DDP's ``module``), or the model itself."""
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


class TrainStep:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device | str = "cpu",
                 amp: str = "off", grad_clip: float = 0.0, accumulate: int = 1,
                 scaler: torch.amp.GradScaler | None = None, scheduler=None, transform=None, ema=None) -> None:
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.model, self.optimizer = model, optimizer
        self.device, self.amp = torch.device(device), amp
        self.grad_clip, self.accumulate = grad_clip, accumulate
        self.scaler = scaler if scaler is not None else grad_scaler_for(self.device, amp)
        self.scheduler = scheduler
        self.transform, self.ema = transform, ema
        self.updates = 0  # optimizer steps taken by this object
        self.params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        self.micro = 0  # micro-batches since the last optimizer step
        self.on_grads = None  # called with no arguments before each optimizer step (e.g. GradProbe.observe)

    def forward(self, batch: dict[str, torch.Tensor], live: bool = True) -> dict[str, torch.Tensor]:
        """The model's outputs with ``loss`` zeroed when nothing in the batch is live."""
        with autocast_for(self.device, self.amp):
            out = self.model(batch)
        if not live:
            out = {**out, "loss": out["loss"] * 0.0}
        return out

    def __call__(self, batch: dict[str, torch.Tensor], live: bool = True) -> dict[str, torch.Tensor]:
        """Forward + backward (+ an optimizer step when ``accumulate`` micro-batches are in); returns the
        model's outputs, detached (``loss`` the batch's, undivided)."""
        final = self.micro + 1 >= self.accumulate
        no_sync = getattr(self.model, "no_sync", None)  # DDP: all-reduce on the final micro-step only
        if self.micro == 0:  # before the forward: the last step's gradients must not sit beside activations
            self.optimizer.zero_grad(set_to_none=True)
        if self.transform is not None:
            batch = self.transform(batch)
        with nullcontext() if final or no_sync is None else no_sync():
            out = self.forward(batch, live)
            loss = out["loss"]
            if not loss.requires_grad:  # nothing trainable (e.g. a frozen zero-shot baseline): evaluate only
                return out
            scaled = loss / self.accumulate if self.accumulate > 1 else loss
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        self.micro += 1
        if self.micro == self.accumulate:
            self.apply()
        # detached: the graph is spent, and a caller's float(loss) on a grad-carrying tensor warns
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in out.items()}

    def apply(self) -> None:
        """Unscale, clip and step with the gradients gathered so far (a partial accumulation at an
        epoch's end included); no-op when none were gathered."""
        if self.micro == 0:
            return
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.on_grads is not None:
            self.on_grads()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # freed now: validation and checkpointing need no gradients
        self.micro = 0
        self.updates += 1
        if self.scheduler is not None:
            step_scheduler(self.scheduler)
        if self.ema is not None:
            self.ema.update()
