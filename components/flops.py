"""Compute accounting: forward GFLOPs per clip and trainable parameters (the papers' tables).

GFLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of one clip
(batch 1, eval mode, no grad), with every configured side modality present. FlopCounterMode counts
a multiply-add as 2 FLOPs and covers matmul/conv/attention ops only (no softmax, norms, elementwise).
Video papers (CM3T's table included, via fvcore/mmcv) usually report multiply-adds as "GFLOPs":
``gmacs`` (= gflops / 2) is the number to compare with them.

``step_flop_counter`` counts a training step (forward and backward as they run). torch's formula for
a convolution's backward counts a grouped convolution's weight gradient as if it were dense (groups x
too many: 67 phantom GFLOP per step for TED's depthwise convolutions in ViT-B/16 at 8 frames); the
counter here divides that term by the groups.

``count_step`` runs one real training step under that counter and splits it: the model's forward as the
step calls it (train mode, the step's own batch and classes: M2-CLIP's class prompts go only through the
text blocks a step runs, the frozen prefix being cached), the forward FLOPs that activation checkpointing
runs again during the backward, and the rest. Model FLOPs (MFU) = executed - recomputed: what the step
needs, frozen weights' gradients excluded (a frozen layer costs about 2x its forward, a trained one 3x);
executed FLOPs (HFU) also count the recomputation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop

from components.engine.checkpointing import backbone_blocks, checkpointed
from components.model_kind import ModelKind
from components.param_counts import parameter_counts


def dummy_batch(model: ModelKind, num_frames: int, img_size: int) -> dict[str, torch.Tensor]:
    """One all-zero uint8 clip plus a present feature for each of the model's side modalities."""
    device = next(model.parameters()).device
    batch = {"video": torch.zeros(1, num_frames, img_size, img_size, 3, dtype=torch.uint8, device=device)}
    for m in model.config.modalities:
        tokens = (m.tokens,) if m.tokens > 1 else ()
        batch[f"side_{m.name}"] = torch.zeros(1, *tokens, max(m.dim, 1), device=device)
        batch[f"side_{m.name}_mask"] = torch.ones(1, dtype=torch.bool, device=device)
    return batch


def forward_flops(model: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of ``model(batch)`` (FlopCounterMode's count); restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _grouped_conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                                output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """torch's count of ``aten.convolution_backward`` with the weight-gradient term divided by ``groups``:
    each of a grouped convolution's weight gradients sees only its group's input channels."""
    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding, groups)
    flops = conv_backward_flop(*args, [output_mask[0], False], out_val=out_shape)  # input gradient: right as is
    if output_mask[1]:
        flops += conv_backward_flop(*args, [False, True], out_val=out_shape) // groups
    return flops


def step_flop_counter() -> FlopCounterMode:
    """A FlopCounterMode for forward + backward with grouped (depthwise) convolutions' backward counted
    as run; use it around a whole training step."""
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten.convolution_backward: _grouped_conv_backward_flop})


@dataclass(frozen=True)
class StepFlops:
    """One training step's FLOPs as it ran (``count_step``)."""

    forward: int  # the model's forward(s) inside the step, loss included
    executed: int  # everything the step ran: forward, backward, recomputation (HFU's numerator)
    recomputed: int  # forward FLOPs of checkpointed blocks run again during the backward

    @property
    def model(self) -> int:
        """What the step needs without recomputation (MFU's numerator)."""
        return self.executed - self.recomputed

    @property
    def backward(self) -> int:
        return self.executed - self.forward - self.recomputed


def count_step(step: Callable[[], object], model: nn.Module) -> StepFlops:
    """FLOPs of one call of ``step`` (a training step of ``model``: forward, backward, optimizer).

    ``model.forward`` and every checkpointed backbone block are wrapped on the instance for this one
    call (restored after): a block that runs after the model's forward has returned is a recomputation.
    Call it after a warm-up step, so caches a real step reuses (M2-CLIP's frozen text prefix) are full."""
    phase = {"backward": False}
    counts = {"forward": 0, "recomputed": 0}
    original = model.__dict__.get("forward")
    base = original or partial(type(model).forward, model)

    def counted_forward(*args, **kwargs):
        phase["backward"] = False
        with step_flop_counter() as c:
            out = base(*args, **kwargs)
        counts["forward"] += c.get_total_flops()
        phase["backward"] = True  # from here on the step is past the model: loss.backward() and the optimizer
        return out

    def watch_recompute(forward):
        def run(*args, **kwargs):
            if not phase["backward"]:
                return forward(*args, **kwargs)
            c = step_flop_counter()
            try:  # torch stops a recomputation (by raising) once it has the tensors the backward needs
                with c:
                    return forward(*args, **kwargs)
            finally:
                counts["recomputed"] += c.get_total_flops()
        return run

    blocks = [b for b in backbone_blocks(model) if getattr(b.forward, "vidpeft_checkpointed", False)]
    saved = [b.forward for b in blocks]
    try:
        model.forward = counted_forward
        for block, fwd in zip(blocks, saved):
            block.forward = checkpointed(watch_recompute(fwd.__wrapped__))
        with step_flop_counter() as total:
            step()
    finally:
        if original is None:
            del model.forward
        else:
            model.forward = original
        for block, fwd in zip(blocks, saved):
            block.forward = fwd
    return StepFlops(forward=counts["forward"], executed=int(total.get_total_flops()),
                     recomputed=counts["recomputed"])


def accounting(model: ModelKind, num_frames: int | None = None, img_size: int | None = None) -> dict[str, float]:
    """GFLOPs / GMACs per clip and trainable parameters (count and % of the frozen backbone)."""
    backbone = model.config.backbone
    num_frames = num_frames or backbone.num_frames
    img_size = img_size or backbone.img_size
    flops = forward_flops(model, dummy_batch(model, num_frames, img_size))
    return {"gflops": flops / 1e9, "gmacs": flops / 2e9, **parameter_counts(model)}
