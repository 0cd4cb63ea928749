"""The multi-task decoder's losses (M2-CLIP Sec. "Multi-Task Decoder"), as plain functions.

Every function takes L2-normalised embeddings where cosine similarities are meant, and the (frozen)
CLIP logit scale ``exp(logit_scale)`` as the inverse temperature ``1/tau``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_kl_loss(
    video: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """ActionCLIP's symmetric video-text KL loss (Eq. 10).

    ``video`` (B, D) and ``text`` (B, D) are normalised, ``text[i]`` the prompt of sample i's label.
    Every pair (i, j) with ``labels[i] == labels[j]`` is positive; each row of the ground-truth matrix
    is normalised to a distribution; loss = (KL(gt || softmax_v2t) + KL(gt^T || softmax_t2v)) / 2,
    each averaged over the B rows (``batchmean``, as ActionCLIP's ``KLDivLoss(mean) * B``).
    """
    logits = scale * video @ text.t()  # (B, B): video i vs text j
    same = (labels.view(-1, 1) == labels.view(1, -1)).to(logits.dtype)
    target_v = same / same.sum(dim=1, keepdim=True)
    target_t = same.t() / same.t().sum(dim=1, keepdim=True)
    kl_v = F.kl_div(F.log_softmax(logits, dim=1), target_v, reduction="batchmean")
    kl_t = F.kl_div(F.log_softmax(logits.t(), dim=1), target_t, reduction="batchmean")
    return (kl_v + kl_t) / 2


def cross_modal_logits(video: torch.Tensor, class_text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Eq. 11 before the softmax: ``scale * cos(v, w_c)`` for every class, (B, D) x (C, D) -> (B, C)."""
    return scale * video @ class_text.t()


def cross_modal_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CMC: cross-entropy on the cross-modal *logits* (the official code wrongly feeds softmaxed scores)."""
    return F.cross_entropy(logits, labels)


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the M masked tokens: ``logits`` (M, V), ``targets`` (M,).

    With M == 0 it is exactly 0 (a sum over nothing divided by 1), never NaN, and still connected to
    the graph so every parameter gets a (zero) gradient.
    """
    total = F.cross_entropy(logits, targets, reduction="sum")
    return total / max(targets.numel(), 1)
