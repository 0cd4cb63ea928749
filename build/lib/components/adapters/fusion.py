"""AdapterFusion over per-modality adapter outputs, with absent modalities masked out of the softmax.

CM3T Eq. 7-10 (after Pfeiffer et al.'s AdapterFusion, adapter-hub ``BertFusion``): the query is the
layer's bottleneck hidden state h, keys and values are the per-modality outputs z_n:

    s'_n = softmax_n((h W_Q) . (z_n W_K)),   z'_n = z_n W_V,   o = sum_n s'_n z'_n

``present`` (B, N) marks which modalities a sample has: an absent modality gets probability exactly 0
(its logit is pushed to the dtype's minimum and the probabilities are multiplied by the mask, so
garbage in its slot cannot leak, and no -inf ever produces NaN gradients); a sample with no modality
gets o = 0. No temperature schedule is used (AdapterFusion's T: 50 -> 1 is optional and would have to
be a persisted buffer); W_V starts as the identity, as in adapter-hub.
"""

from __future__ import annotations

import torch
from torch import nn


class ModalityFusion(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width, bias=False)
        nn.init.eye_(self.value.weight)

    def forward(self, h: torch.Tensor, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """h (B, L, r) queries, z (B, L, N, r) per-modality outputs, present (B, N) bool -> (B, L, r)."""
        q = self.query(h)  # b l r
        k = self.key(z)  # b l n r
        logits = torch.einsum("blr,blnr->bln", q, k)
        mask = present[:, None, :]  # b 1 n
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        probs = logits.softmax(dim=-1) * mask  # absent -> exactly 0; all absent -> all 0
        return torch.einsum("bln,blnr->blr", probs, self.value(z))
