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
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop

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


def accounting(model: ModelKind, num_frames: int | None = None, img_size: int | None = None) -> dict[str, float]:
    """GFLOPs / GMACs per clip and trainable parameters (count and % of the frozen backbone)."""
    backbone = model.config.backbone
    num_frames = num_frames or backbone.num_frames
    img_size = img_size or backbone.img_size
    flops = forward_flops(model, dummy_batch(model, num_frames, img_size))
    return {"gflops": flops / 1e9, "gmacs": flops / 2e9, **parameter_counts(model)}
