"""AdapterFusion over per-modality adapter outputs, with absent modalities masked out of the softmax.

CM3T Eq. 7-10 (after Pfeiffer et al.'s AdapterFusion, adapter-hub ``BertFusion``): the query is the
layer's bottleneck hidden state h, keys and values are the per-modality outputs z_n:

    s'_n = softmax_n((h W_Q) . (z_n W_K)),   z'_n = z_n W_V,   o = sum_n s'_n z'_n

``present`` (B, N) marks which modalities a sample has: an absent modality gets probability exactly 0
(its logit is pushed to the dtype's minimum and the probabilities are multiplied by the mask, so
garbage in its slot cannot leak, and no -inf ever produces NaN gradients); a sample with no modality
gets o = 0. No temperature schedule is used (AdapterFusion's T: 50 -> 1 is optional and would have to
be a persisted buffer); W_V starts as the identity, as in adapter-hub.

Over one modality (``single``) the softmax of its one logit is 1 wherever it is present, whatever W_Q and
W_K compute: they could never change the output nor get a gradient, so they are not built and
o = present * z W_V, the same function. Over several modalities each part trains, even when every
modality is one token broadcast to all video tokens: the query still differs per video token.
"""

from __future__ import annotations

import torch
from torch import nn


class ModalityFusion(nn.Module):
    def __init__(self, width: int, single: bool = False) -> None:
        super().__init__()
        self.single = single
        self.query = None if single else nn.Linear(width, width)
        self.key = None if single else nn.Linear(width, width)
        self.value = nn.Linear(width, width, bias=False)
        nn.init.eye_(self.value.weight)

    def forward(self, h: torch.Tensor | None, z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """h (B, L, r) queries (unused when ``single``), z (B, L, N, r) per-modality outputs, present (B, N)
        bool -> (B, L, r)."""
        mask = present[:, None, :]  # b 1 n
        if self.single:
            if z.shape[2] != 1:
                raise ValueError(f"fusion built for one modality got {z.shape[2]}")
            probs = mask.to(z.dtype).expand(z.shape[:3])  # softmax of one logit: 1 where present, else 0
        else:
            q = self.query(h)  # b l r
            k = self.key(z)  # b l n r
            logits = torch.einsum("blr,blnr->bln", q, k)
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
            probs = logits.softmax(dim=-1) * mask  # absent -> exactly 0; all absent -> all 0
        return torch.einsum("bln,blnr->blr", probs, self.value(z))
