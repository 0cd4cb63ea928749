"""Mixup / CutMix over clips and label smoothing: a training batch's clips and targets, mixed.

timm's ``Mixup`` does the sampling (one lambda per batch, pair or clip; mixup or cutmix by
``switch_prob``; the cutmix box and its area-corrected lambda) and the target mixing (one-hot with
label smoothing for single-label, the dense vectors for multi-label). Its pixel code indexes
``x[:, :, y0:y1, x0:x1]`` and draws the box over ``shape[-2:]``: right for (B, C, H, W), but on a
(B, C, T, H, W) clip batch it would cut along T and H. So each clip is handed to it as one image
with its frames stacked as channels, (B, T*C, H, W): one lambda and one box for every frame of a
clip. The mixed clips go back to uint8 (rounded; the model normalises uint8 itself), targets become
soft (B, K) rows that the task's loss takes (``SingleLabel`` and ``MultiLabel``).

timm needs an even batch (clip i mixes with clip B-1-i); an odd batch (a short last batch, or one
with unreadable clips dropped) mixes its first B-1 clips and only smooths the last one's target.
Randomness: numpy's global generator (timm's), seeded by the caller.
"""

from __future__ import annotations

import torch
from einops import rearrange
from timm.data.mixup import Mixup, mixup_target

MIX_MODES = ("batch", "pair", "elem")


class ClipMix:
    """A batch transform: ``batch`` (``video`` (B, T, H, W, C) uint8, ``target``) -> a new batch
    with mixed clips and soft targets. ``task``: ``single_label`` or ``multi_label``."""

    def __init__(self, task: str, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 prob: float = 1.0, switch_prob: float = 0.5, mode: str = "batch",
                 label_smoothing: float = 0.0) -> None:
        if task not in ("single_label", "multi_label"):
            raise ValueError(f"mixup, cutmix and label smoothing take single_label or multi_label targets, not {task}")
        if mode not in MIX_MODES:
            raise ValueError(f"mix mode must be one of {MIX_MODES}, got {mode!r}")
        self.num_classes, self.smoothing = num_classes, label_smoothing
        self.multi_label = task == "multi_label"
        self.mixer = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixer = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob,
                               switch_prob=switch_prob, mode=mode, label_smoothing=label_smoothing,
                               num_classes=num_classes, multi_label=self.multi_label)

    def smooth(self, target: torch.Tensor) -> torch.Tensor:
        """Soft targets without mixing: (B,) class indices or (B, K) multi-hot -> (B, K) smoothed."""
        return mixup_target(target, self.num_classes, 1.0, self.smoothing, self.multi_label)

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        video, target = batch["video"], batch["target"]
        even = len(video) - len(video) % 2
        if self.mixer is None or even == 0:
            return {**batch, "target": self.smooth(target)}
        t = video.shape[1]
        x = rearrange(video, "b t h w c -> b (t c) h w").to(torch.float32, copy=True)  # one image per clip
        mixed, soft = self.mixer(x[:even], target[:even])  # in place on the view x[:even]
        if even < len(video):
            soft = torch.cat([soft, self.smooth(target[even:])])
        if video.dtype == torch.uint8:
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        return {**batch, "video": rearrange(x, "b (t c) h w -> b t h w c", t=t), "target": soft}
