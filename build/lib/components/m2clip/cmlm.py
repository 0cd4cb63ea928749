"""Cross-modal masked language modelling (CMLM, M2-CLIP Eq. 12).

A 13th text block, a weight copy of the last one and frozen, cross-attends from the (masked) prompt's
final-layer tokens to the per-frame video embeddings ``[v_1..v_T]`` (both normalised by its ``ln_1``):
``w* = z + CA(LN(z), LN(v))``; a trainable text adapter sits before its FFN: ``w^ = A(w*)``,
``w_m = w^ + MLP(LN(w^))``; then the text tower's ``ln_final`` (as the official code) and a BERT MLM head
(dense -> GELU -> LayerNorm -> vocabulary linear) predict the masked tokens. Only the adapter and the
head train. Masking replaces class-name tokens of the prompt by the token of "mask" (CLIP has no
[MASK]); the official code never masks (its sampler runs with probability 0), here masking is real.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from components.adapters.base import ForwardContext, TokenLayout
from components.adapters.inject import inject_adapters
from components.adapters.wrapper import AdaptedModule
from components.backbones.openclip_vit import OPENCLIP_SITES, TappedResidualAttentionBlock
from components.backbones.spec import BackboneSpec
from components.m2clip.text_adapter import TextAdapterConfig


class MLMHead(nn.Module):
    """BERT's prediction head: transform (dense, GELU, LayerNorm) then a linear layer over the vocabulary."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(width, eps=1e-12)
        self.decoder = nn.Linear(width, vocab_size)
        for linear in (self.dense, self.decoder):  # BERT's init
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(x))))


class CrossModalMLM(nn.Module):
    def __init__(
        self, last_text_block: nn.Module, adapter_width: int, vocab_size: int, context: ForwardContext
    ) -> None:
        super().__init__()
        if not isinstance(last_text_block, TappedResidualAttentionBlock) or any(
            isinstance(m, AdaptedModule) for m in last_text_block.modules()
        ):
            raise ValueError("CMLM needs a clean copy of the last open_clip text block (taken before injection)")
        self.block = copy.deepcopy(last_text_block).requires_grad_(False)
        width = self.block.ln_1.normalized_shape[0]
        # kept as ``self.spec``: model.grad_checkpointing finds the block through it, like the towers' blocks
        self.spec = spec = BackboneSpec(
            family="openclip_text_cmlm",
            feature_dim=width,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            blocks=["block"],
            sites=dict(OPENCLIP_SITES),
            block_dims=[width],
            block_heads=[self.block.attn.num_heads],
            layouts=[TokenLayout(kind="sequence")],
        )
        inject_adapters(self, spec, [TextAdapterConfig(layers=[0], bottleneck=adapter_width)], context)
        self.head = MLMHead(width, vocab_size)

    def forward(
        self, text_tokens: torch.Tensor, frames: torch.Tensor, ln_final: nn.Module, positions: torch.Tensor
    ) -> torch.Tensor:
        """Vocabulary logits (M, V) at the M ``positions`` (N, L) bool of ``text_tokens`` (N, L, W).

        ``frames`` (N, T, W): per-frame video embeddings, the keys/values of the cross-attention.
        """
        x = self.block(text_tokens, frames)  # (N, L, W): text queries, frame keys/values, no mask
        return self.head(ln_final(x[positions]))  # (M, V): only where tokens were masked


def mask_label_tokens(
    ids: torch.Tensor, is_label: torch.Tensor, prob: float, at_least_one: bool, mask_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each class-name token with probability ``prob``; returns (masked ids, masked positions).

    With ``at_least_one`` (and ``prob > 0``) a sample whose draw masked nothing gets one random
    class-name token masked, as the official sampler masks ``max(1, round(rate * words))`` words.
    """
    masked = is_label & (torch.rand(ids.shape, device=ids.device) < prob)
    if at_least_one and prob > 0:
        empty = ~masked.any(dim=1) & is_label.any(dim=1)
        if empty.any():
            scores = torch.rand(ids.shape, device=ids.device).masked_fill(~is_label, -1.0)
            pick = scores.argmax(dim=1)  # a random class-name position per row
            masked[empty, pick[empty]] = True
    return torch.where(masked, torch.full_like(ids, mask_id), ids), masked
