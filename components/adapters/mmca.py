"""MMCA: one shared cross-attention over all side modalities at once (CM3T Table 5, its ref. [38]).

CM3T offers MMCA (the multimodal cross-attention of the FAt transformer, Agrawal et al., WACV 2023)
as the alternative to one CAA per modality plus AdapterFusion: a single module whose attention weights
are shared by every modality, so the model grows less per modality, at the cost of flexibility (the
shared attention is trained on the set of modalities it saw). Our reading, since neither paper's code
is public:

    h        = ReLU(x W_down)                           video bottleneck tokens (B, L, r) (own or shared W_down)
    tokens_n = reshape(m_n W_in,n + b_in,n)             each modality -> M tokens of width r (B, M, r); the
                                                        bias b_in,n doubles as a modality-type embedding
    T        = [tokens_1; ...; tokens_N]                concatenated (B, N*M, r)
    o        = MultiHeadAttention(Q = h W_q, K = T W_k, V = T W_v) W_o     one shared attention
    delta    = s * up(o)                                up zero-initialised: identity at init

Only the small per-modality input projections (keyed by modality name) are per modality. A modality
absent for a sample has its tokens masked out of the attention softmax (zeroed first, so garbage cannot
leak); a sample with no modality gets a zero delta.

One key token: when the modalities bring one token in all (one modality, M = 1), the softmax over it
is 1 whatever the query, so o = v W_o for every video token. W_q, and W_down when its only reader is
the query (own W_down), could never change the output nor get a gradient: they are not built (known
at build time from ``modality_tokens`` and ``model.modalities[].tokens``), the output is the same
function, and their names are in ``unbuilt_keys`` so weights saved when they were built still load.
The key rows of the fused ``kv`` projection cannot train either, but stay: they share one tensor with
the value rows, which older weights hold together (docs/caa-one-token.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from components.adapters.base import WIDTH_HELP, AdapterConfig, AdapterLayer, SiteInfo, Width, check_width, scaled_width, zero_linear
from components.adapters.caa import ModalityTokens, SharedDown, adapter_modalities, modality_dim, side_feature
from components.adapters.registry import register_adapter
from components.adapters.tokens import clip_tokens
from components.config import cfg


@dataclass
class MMCAConfig(AdapterConfig):
    type: str = cfg("mmca", "adapter type")
    sites: list[str] = cfg(["block"], "backbone sites")
    modalities: list[str] = cfg([], "side modalities attended together (names from model.modalities); empty = all")
    bottleneck: Width = cfg(64, "width r of the video bottleneck and of the modality tokens" + WIDTH_HELP)
    modality_tokens: int = cfg(1, "tokens M a per-clip modality vector is projected to (sequences bring their own)")
    num_heads: int = cfg(1, "heads of the shared cross-attention (must divide bottleneck)")
    share_down_with: str = cfg("", "adapter key (an MHVA in the same block) whose W_down gives the queries")
    scale: float = cfg(1.0, "initial value of the output scale s")
    learnable_scale: bool = cfg(True, "learn s")
    dropout: float = cfg(0.0, "dropout on the bottleneck activations")

    def __post_init__(self) -> None:
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities has duplicates: {self.modalities}")
        check_width(self.bottleneck, "bottleneck")
        if self.modality_tokens <= 0 or self.num_heads <= 0:
            raise ValueError("modality_tokens and num_heads must be positive")
        if isinstance(self.bottleneck, int) and self.bottleneck % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} must divide bottleneck {self.bottleneck}")


class MultiModalCrossAttention(AdapterLayer):
    def __init__(self, config: MMCAConfig, site: SiteInfo) -> None:
        super().__init__(config, site)
        r, m = scaled_width(config.bottleneck, site.dim), config.modality_tokens
        if r % config.num_heads:
            raise ValueError(f"mmca at {site.path}: num_heads {config.num_heads} must divide its width {r}")
        self.dims = {n: modality_dim(site, n, config.key) for n in adapter_modalities(site, config)}
        self.inputs = ModalityTokens(site, self.dims, r, m)
        # one key token in all: the query cannot change the attention ("One key token")
        self.reads_h = sum(t if t > 1 else m for t in self.inputs.tokens.values()) > 1
        # kept when shared (no weights of its own): share_down_with is still checked by bind()
        self.down = SharedDown(config, site) if self.reads_h or config.share_down_with else None
        self.drop = nn.Dropout(config.dropout)
        self.q = nn.Linear(r, r) if self.reads_h else None
        self.kv = nn.Linear(r, 2 * r)
        self.out = nn.Linear(r, r)
        self.up = zero_linear(r, site.dim)
        self.register_scale(config.scale, config.learnable_scale)
        unbuilt = [] if self.reads_h else ["q"] + ([] if self.down is not None else ["down.own.0"])
        self.unbuilt_keys = tuple(f"{part}.{p}" for part in unbuilt for p in ("weight", "bias"))

    def bind(self) -> None:
        if self.down is not None:
            self.down.bind()

    def attend(self, h: torch.Tensor, keys: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Queries h (B, L, r) over the modality tokens keys (B, S, r), absent ones masked -> (B, L, r)."""
        r, heads = h.shape[-1], self.config.num_heads
        q = rearrange(self.q(h), "b l (h d) -> b h l d", h=heads)
        k, v = rearrange(self.kv(keys), "b s (two h d) -> two b h s d", two=2, h=heads)
        logits = torch.einsum("bhld,bhsd->bhls", q, k) * (r // heads) ** -0.5
        mask = present[:, None, None, :]  # b 1 1 s
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        probs = logits.softmax(dim=-1) * mask  # absent tokens -> 0; no modality at all -> all 0
        return rearrange(torch.einsum("bhls,bhsd->bhld", probs, v), "b h l d -> b l (h d)")

    def forward(self, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        if self.reads_h:
            h, restore = clip_tokens(self.down(x), self.site.layout, self.context.num_frames)  # b l r
            h = like = self.drop(h)
        else:  # nothing reads h: x gives the clip's token count and layout
            h, (like, restore) = None, clip_tokens(x, self.site.layout, self.context.num_frames)  # b l c
        (b, length), r = like.shape[:2], self.out.in_features
        tokens, present = [], []
        for name in self.dims:
            feat, here = side_feature(self.context, name, b, self.dims[name], like, self.inputs.tokens[name])
            t = self.inputs(name, feat)  # b m r
            tokens.append(t)
            present.append(here[:, None].expand(b, t.shape[1]))
        keys = torch.cat(tokens, dim=1)  # b (n m) r
        present = torch.cat(present, dim=1)  # b (n m)
        if h is not None:
            o = self.attend(h, keys, present)
        else:  # one key token, weight 1: every video token reads its value (kv's value half), b 1 r -> b l r
            o = self.kv(keys)[..., r:].expand(b, length, r)
        y = self.up(self.out(o)) * present.any(dim=1)[:, None, None]  # no modality: zero, biases included
        return self.scale * restore(y)


register_adapter("mmca", MMCAConfig, MultiModalCrossAttention,
                 not_mergeable="cross-attention to side-modality features that change per clip")
