"""``nn.MultiheadAttention`` with a fast path for the plain self-attention open_clip runs in training.

With gradients on, ``nn.MultiheadAttention`` takes its general path: it transposes batch-first input
to (N, B, E) and projects that non-contiguous view, which PyTorch runs as a batched matmul against the
weight expanded once per token position. In open_clip's ViT-B/16 image tower (8 frames) the q/k/v
projection then took 0.82 s per step instead of ~0.13 s for a projection of the same size on
contiguous input (profiled on this project's benchmark CPU), and its backward as much again.

``SelfAttention`` keeps the module's parameters, names and state dict, and computes plain
self-attention (query, key and value the same tensor, no key padding mask, no attention weights
returned, no attention dropout in training) as one contiguous projection, fused attention
(``F.scaled_dot_product_attention``, with ``attn_mask`` as MultiheadAttention reads it) and the
output projection. Any other call runs ``nn.MultiheadAttention.forward`` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def plain_self_attention(m: nn.MultiheadAttention, query, key, value, key_padding_mask=None,
                         need_weights: bool = True, is_causal: bool = False) -> bool:
    """True when ``m(query, key, value, ...)`` is plain self-attention that q/k/v projections, SDPA
    and the output projection reproduce (``attn_mask`` aside, which SDPA takes too)."""
    return (query is key and key is value and key_padding_mask is None and not need_weights
            and not is_causal and m._qkv_same_embed_dim and m.bias_k is None
            and not m.add_zero_attn and not (m.training and m.dropout > 0))


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fused projection's output (B, N, 3 * H * dh) -> q, k, v, each a (B, H, N, dh) view.

    Split with ``unbind`` on the (B, N, 3, H, dh) view: its backward stacks the three gradients straight
    into the projection's layout. Indexing ``qkv[0]`` ... of a (3, B, H, N, dh) permutation instead
    costs, per index, a zero-filled copy of the whole tensor in backward, plus a permuting copy."""
    q, k, v = qkv.unflatten(-1, (3, num_heads, -1)).unbind(2)  # b n h d each
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # b h n d


class SelfAttention(nn.MultiheadAttention):
    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not plain_self_attention(self, query, key, value, key_padding_mask, need_weights, is_causal):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        x = query if self.batch_first else rearrange(query, "n b e -> b n e")
        q, k, v = split_heads(F.linear(x.contiguous(), self.in_proj_weight, self.in_proj_bias), self.num_heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self._sdpa_mask(attn_mask, x.shape[0], q.dtype))
        out = F.linear(rearrange(y, "b h n d -> b n (h d)"), self.out_proj.weight, self.out_proj.bias)
        return (out if self.batch_first else rearrange(out, "b n e -> n b e")), None

    def _sdpa_mask(self, mask: torch.Tensor | None, batch: int, dtype: torch.dtype) -> torch.Tensor | None:
        """MultiheadAttention's mask (bool: True = masked out; float: added) as SDPA's additive mask."""
        if mask is None:
            return None
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        if mask.dim() == 3:  # (B * heads, L, S) -> (B, heads, L, S)
            mask = rearrange(mask, "(b h) l s -> b h l s", b=batch)
        return mask.to(dtype)


def use_fast_self_attention(root: nn.Module) -> int:
    """Give every plain ``nn.MultiheadAttention`` under ``root`` the fast path (same parameters)."""
    count = 0
    for module in root.modules():
        if type(module) is nn.MultiheadAttention:
            module.__class__ = SelfAttention
            count += 1
    return count
