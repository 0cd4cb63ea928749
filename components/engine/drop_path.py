"""Stochastic depth (drop-path) on a backbone's blocks, frozen blocks included: ``optim.drop_path``.

Each backbone names, in its family description (``BackboneSpec.residual_branches``), the modules
inside a block whose output is a residual branch about to be added to the stream: timm's
``drop_path1``/``drop_path2`` (ViT, VideoMAE, ViViT), torchvision Video Swin's ``stochastic_depth``
(called on both branches), open_clip's ``ls_1``/``ls_2``. A forward hook on each multiplies that
output by a per-clip keep mask / (1 - p) in training mode and passes it through untouched in eval
mode, so parameter names, checkpoints and the eval-mode output are unchanged (an adapted model
still equals its frozen backbone at step 0 in eval mode). Rates rise linearly with depth, from 0 at
the first block to ``rate`` at the last (timm's ``drop_path_rate`` and torchvision's
``stochastic_depth_prob`` schedules). The branch module's own drop (torchvision's
``StochasticDepth.p``, timm's ``DropPath.drop_prob``) is set to 0: this one replaces it.

One mask per clip: blocks whose tokens are per frame (layout ``frames``: rows are (B*T)) drop a
branch for all T frames of a clip together; other layouts have one row per clip already.
"""

from __future__ import annotations

import torch
from torch import nn

from components.adapters.inject import resolve_module
from components.backbones.spec import described, described_blocks


class ClipDropPath:
    """Forward hook: the branch's output (rows first) times a per-clip Bernoulli(1 - p) mask / (1 - p)."""

    def __init__(self, p: float, frames: int) -> None:
        self.p, self.frames = p, frames  # frames: rows per clip (1 = one row per clip)

    def __call__(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        if not module.training or self.p <= 0:
            return output
        rows = output.shape[0]
        per_clip = self.frames if rows % self.frames == 0 else 1
        keep = 1.0 - self.p
        mask = output.new_empty(rows // per_clip).bernoulli_(keep).div_(keep)
        mask = mask.repeat_interleave(per_clip)  # (b t): a clip's frames are consecutive rows
        return output * mask.view(rows, *([1] * (output.ndim - 1)))


def _silence_own_drop(module: nn.Module) -> None:
    if hasattr(module, "drop_prob"):  # timm DropPath
        module.drop_prob = 0.0
    if type(module).__name__ == "StochasticDepth":  # torchvision.ops
        module.p = 0.0


def enable_drop_path(model: nn.Module, rate: float, num_frames: int) -> int:
    """Drop-path at up to ``rate`` on every described backbone that names its residual branches;
    ``num_frames``: frames per training clip. Returns the blocks hooked (0 raises: the option would
    do nothing)."""
    if not 0 <= rate < 1:
        raise ValueError(f"drop_path must be in [0, 1), got {rate}")
    hooked = 0
    for owner, spec in described(model):
        if not spec.residual_branches:
            continue
        blocks = described_blocks(owner, spec)
        last = max(len(spec.blocks) - 1, 1)
        for i, block in blocks:
            frames = num_frames if spec.layouts and spec.layouts[i].kind == "frames" else 1
            hook = ClipDropPath(rate * i / last, max(frames, 1))
            for path in spec.residual_branches:
                branch = resolve_module(block, path)  # through adapter wrappers (site block)
                _silence_own_drop(branch)
                branch.register_forward_hook(hook)
            hooked += 1
    if rate > 0 and hooked == 0:
        raise ValueError("drop_path: this model's backbone family names no residual branches to drop")
    return hooked
