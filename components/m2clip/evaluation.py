"""Multi-view testing: a video is scored on several clips x crops and the views are averaged."""

from __future__ import annotations

import torch
from einops import rearrange


def average_views(logits: torch.Tensor, num_views: int, mode: str = "prob") -> torch.Tensor:
    """(B*V, K) scores, the V views of each video consecutive -> (B, K).

    ``prob``: mean of the views' softmax probabilities, returned as its log (so it still ranks and
    feeds cross-entropy like logits; the official code averages softmaxed scores). ``logit``: mean logits.
    """
    x = rearrange(logits, "(b v) k -> b v k", v=num_views)
    if mode == "prob":
        return x.float().softmax(dim=-1).mean(dim=1).log()
    if mode == "logit":
        return x.mean(dim=1)
    raise ValueError(f"mode must be prob or logit, got {mode!r}")
