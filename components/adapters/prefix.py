"""Gated prefix tuning on attention sites (He et al. 2021's form, as used by CM3T Sec. 3.2.1).

Learned rows C (``prefix_length`` x d; Embedding + MLP reparameterisation, ReLU as in CM3T) become
per-head prefix keys/values through the FROZEN attention's own projections: P_k = C W_k, P_v = C W_v
(biases included, so a prefix row is treated exactly like a token). For every head, with the frozen
attention's queries q, keys k and values v recomputed from the site input:

    attn   = softmax(q k^T / sqrt(dh) + bias) v           (the frozen attention, bias = Swin's)
    delta  = softmax(q P_k^T / sqrt(dh)) P_v              (prefix keys get no position bias)
    lambda = sum exp(prefix logits) / (sum exp(prefix logits) + sum exp(self logits))
           = sigmoid(logsumexp(prefix logits) - logsumexp(self logits))
    heads  = (1 - lambda) attn + lambda delta             == attention over [P_k; k] with [P_v; v]

The wrapped attention already returns W_o attn + b_o, so this adapter returns the residual
``gate * W_o (lambda (delta - attn))`` (output projection without its bias).

Masks: where the wrapped call masks attention (``attn_mask``, ``key_padding_mask``, ``is_causal``:
open_clip's causal text tower, padded sequences), the mask applies to the real-key columns only;
prefix columns are never masked (every query may read the prefix), exactly as attention over
[prefix; keys] with the mask padded by L unmasked columns on the left.

One pass (the default path): recomputing the attention beside the frozen module doubles the
site's work and an unfused softmax keeps the (N x N) maps for backward. So where the call is
self-attention the adapter can reproduce (``plain_call``: masks included), the adapter replaces the
frozen call (``replace_base``): it computes q, k, v once and runs two fused attentions
(``F.scaled_dot_product_attention``), over the tokens (``attn``, the frozen output) and over
[prefix; tokens] (``joint``); since joint = (1 - lambda) attn + lambda delta, ``attn + gate (joint -
attn)`` is the adapted output, equal to the two-pass result. Calls that ask for attention weights or
run attention dropout fall back to the frozen module plus the two-pass residual (same mask).

The paper's form (``zero_init_gate: false``, the default and every preset's but PT alone's): gate fixed at 1, the
adapted attention IS attention over [prefix; tokens] from step 0. It is not the identity at init: a
random prefix takes a share lambda of every query's attention. How much, measured by
``python benchmarks/prefix_init.py`` (README, "Prefix tuning at init"): at the presets'
init (C ~ N(0, 1) through a Linear-ReLU-Linear MLP, projected by the frozen k/v weights) the
prefix's share of attention is small and the backbone output moves little, but it is not zero.
``zero_init_gate: true`` (He et al.'s gate_add written as a learned scalar; ``cm3t/pt_only``'s form, whose
sources say why) multiplies the residual by a learnable gate starting at 0: exact identity at init, but
the prefix rows get no gradient at step 0 (only the gate does).

Which attention modules are supported is decided by ``components.backbones.attention`` (timm,
nn.MultiheadAttention/open_clip, torchvision Video Swin windows), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from components.adapters.base import WIDTH_HELP, AdapterConfig, AdapterLayer, SiteInfo, Width, check_width, scaled_width
from components.adapters.registry import register_adapter
from components.backbones.attention import attention_internals
from components.config import cfg


@dataclass
class PrefixConfig(AdapterConfig):
    type: str = cfg("prefix", "adapter type")
    sites: list[str] = cfg(["attn"], "attention sites only (the site's module must be an attention)")
    prefix_length: int = cfg(16, "number of learned prefix rows L (prefix keys/values per head)")
    reparameterize: bool = cfg(True, "produce C with Embedding + MLP (Li & Liang); false = C is a free parameter")
    hidden: Width = cfg(512, "hidden width of the reparameterisation MLP" + WIDTH_HELP)
    activation: str = cfg("relu", "reparameterisation MLP activation: relu (CM3T) or tanh (He et al.)")
    dropout: float = cfg(0.1, "dropout inside the reparameterisation MLP (CM3T: lower than He et al.)")
    zero_init_gate: bool = cfg(False, "ablation: multiply the residual by a learnable gate starting at 0 (identity "
                               "at init); false = the paper's form, attention over [prefix; tokens] from step 0")

    def __post_init__(self) -> None:
        if self.prefix_length <= 0:
            raise ValueError(f"prefix_length must be positive, got {self.prefix_length}")
        check_width(self.hidden, "hidden")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be relu or tanh, got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class PrefixRows(nn.Module):
    """C (L, d): an embedding table, optionally reparameterised by Linear -> act -> Dropout -> Linear."""

    def __init__(self, config: PrefixConfig, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.prefix_length, dim)
        self.mlp = None
        hidden = scaled_width(config.hidden, dim)
        if config.reparameterize:
            act = nn.ReLU() if config.activation == "relu" else nn.Tanh()
            self.mlp = nn.Sequential(
                nn.Linear(dim, hidden), act, nn.Dropout(config.dropout), nn.Linear(hidden, dim)
            )

    def forward(self) -> torch.Tensor:
        c = self.embedding.weight  # L d
        return self.mlp(c) if self.mlp is not None else c


class PrefixTuning(AdapterLayer):
    takes_call = True  # AdaptedModule passes the wrapped call's (args, kwargs): masks apply to real keys

    def __init__(self, config: PrefixConfig, site: SiteInfo) -> None:
        super().__init__(config, site)
        try:
            self.internals = attention_internals(site.base)
        except TypeError as e:
            raise TypeError(f"prefix adapter at {site.path} (site {site.site!r}): {e}") from None
        self.prefix = PrefixRows(config, site.dim)
        if config.zero_init_gate:
            self.gate = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("gate", torch.ones(()))

    def mixed_heads(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, object]:
        """lambda * (delta - attn) per head, (B', H, N, dh), and the view that maps it back. ``mask``
        (additive, broadcast to (B', H, N, N)) masks real keys; prefix logits are never masked."""
        view = self.internals.heads(x)
        pk, pv = self.internals.prefix_kv(self.prefix())  # h l d each
        scale = self.internals.scale
        q = view.q * scale
        self_logits = q @ view.k.transpose(-2, -1)  # b h n n
        if view.logit_bias is not None:
            self_logits = self_logits + view.logit_bias
        if mask is not None:
            self_logits = self_logits + mask
        prefix_logits = torch.einsum("bhnd,hld->bhnl", q, pk)  # b h n l
        lam = torch.sigmoid(prefix_logits.logsumexp(-1) - self_logits.logsumexp(-1)).unsqueeze(-1)  # b h n 1
        attn = self_logits.softmax(-1) @ view.v  # b h n d
        delta = torch.einsum("bhnl,hld->bhnd", prefix_logits.softmax(-1), pv)
        return lam * (delta - attn), view

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, call: tuple = ((), {})) -> torch.Tensor:
        """The residual added to the frozen output; ``call`` = the wrapped call's (args, kwargs)."""
        mixed, view = self.mixed_heads(x, self.internals.call_mask(x, *call))
        return self.gate * self.internals.project(view.restore(mixed))

    def replace_base(self, x: torch.Tensor, args: tuple, kwargs: dict, need_frozen: bool):
        """(adapted output, frozen output or None) in one pass, or None where the call is not plain."""
        if not self.internals.plain_call(x, args, kwargs):
            return None
        mask = self.internals.call_mask(x, args, kwargs)
        view = self.internals.heads(x)
        pk, pv = self.internals.prefix_kv(self.prefix())  # h l d each
        q, k, v, bias = view.q, view.k, view.v, view.logit_bias
        if mask is not None:
            bias = mask if bias is None else bias + mask
        b, _, n, _ = q.shape  # (B', H, N, dh)
        length = pk.shape[1]
        joint_bias = None
        if bias is not None:  # prefix columns get no position bias nor mask: pad the (.., N, N) bias on the left
            joint_bias = F.pad(bias.expand(*bias.shape[:-2], n, n), (length, 0))
        k2 = torch.cat([pk.unsqueeze(0).expand(b, -1, -1, -1), k], dim=2)  # b h (l+n) d
        v2 = torch.cat([pv.unsqueeze(0).expand(b, -1, -1, -1), v], dim=2)
        scale = self.internals.scale
        joint = F.scaled_dot_product_attention(q, k2, v2, attn_mask=joint_bias, scale=scale)
        if isinstance(self.gate, nn.Parameter) or need_frozen:
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
            heads = attn + self.gate * (joint - attn)
        else:  # gate fixed at 1: plain prefix tuning needs the joint attention only
            attn, heads = None, joint
        out = self.internals.pack(self.internals.project(view.restore(heads), bias=True))
        frozen = None
        if need_frozen:
            frozen = self.internals.pack(self.internals.project(view.restore(attn), bias=True))
        return out, frozen


register_adapter("prefix", PrefixConfig, PrefixTuning,
                 not_mergeable="extra keys/values in the attention softmax, not a weight change")
