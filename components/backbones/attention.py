"""Attention internals: how to recompute q, k, v of a frozen attention module, described once per type.

Prefix tuning needs the per-head queries, keys and values a frozen attention computes, any additive
logit bias it uses (Swin's relative position bias and shift mask), its key/value projections (to turn
learned prefix rows into prefix keys/values) and its output projection. Each attention class gets one
``AttentionInternals`` implementation, registered by module type; adapters look it up with
``attention_internals(module)`` and never touch attribute paths themselves.

Registered here: timm ``Attention`` (``qkv``/``proj``) and ``torch.nn.MultiheadAttention``
(``in_proj_weight``/``out_proj``, used by open_clip towers). torchvision's Video Swin window
attention is registered in ``video_swin.py``, next to the family that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from components.backbones.fast_mha import plain_self_attention, split_heads


@dataclass
class HeadsView:
    """One forward's per-head tensors, (B', H, N, dh) each, in the module's own attention groups."""

    q: torch.Tensor  # unscaled queries
    k: torch.Tensor
    v: torch.Tensor
    logit_bias: torch.Tensor | None  # added to q k^T * scale (broadcasts to (B', H, N, N)), or None
    restore: Callable[[torch.Tensor], torch.Tensor]  # (B', H, N, dh) -> the input's layout, H*dh channels


class AttentionInternals:
    """Base class; one subclass per attention module type."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    num_heads: int
    head_dim: int

    @property
    def scale(self) -> float:
        return self.head_dim**-0.5

    def heads(self, x: torch.Tensor) -> HeadsView:  # pragma: no cover - interface
        raise NotImplementedError

    def prefix_kv(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """Learned prefix rows (L, D) -> keys and values (H, L, dh) through the frozen k/v projections."""
        raise NotImplementedError

    def project(self, y: torch.Tensor, bias: bool = False) -> torch.Tensor:  # pragma: no cover
        """The frozen output projection, without its bias for a residual, with it for a whole output."""
        raise NotImplementedError

    def plain_call(self, x: torch.Tensor, args: tuple, kwargs: dict) -> bool:
        """True when ``module(x, *args, **kwargs)`` is self-attention over ``x`` that ``heads(x)`` plus
        ``call_mask`` reproduce (no attention weights asked for, no attention dropout), so an adapter
        may compute the module's output itself; otherwise the frozen module must run. False unless a
        type says."""
        return False

    def call_mask(self, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """The additive mask this call applies to the logits of the real keys (0 = kept, -inf =
        masked), broadcastable to (B', H, N, N), from its ``attn_mask`` / ``key_padding_mask`` /
        ``is_causal``; None for an unmasked call. Types whose calls take no mask keep this default."""
        return None

    def pack(self, out: torch.Tensor):
        """The module's return value from its attention output (e.g. MultiheadAttention's tuple)."""
        return out


_INTERNALS: dict[type, type[AttentionInternals]] = {}


def register_attention_internals(module_cls: type):
    def deco(cls: type[AttentionInternals]):
        _INTERNALS[module_cls] = cls
        return cls

    return deco


def _internals_class(module: nn.Module) -> type[AttentionInternals] | None:
    return next((_INTERNALS[cls] for cls in type(module).__mro__ if cls in _INTERNALS), None)


def attention_internals(module: nn.Module) -> AttentionInternals:
    found = _internals_class(module)
    if found is None:  # a family registers its attention types when its module loads (lazily): load them all
        from components.backbone_family import families

        families()
        found = _internals_class(module)
    if found is not None:
        return found(module)
    raise TypeError(
        f"prefix tuning does not know the internals of {type(module).__name__}; "
        f"known attention types: {sorted(c.__name__ for c in _INTERNALS)}"
    )


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype, true_masks: bool) -> torch.Tensor | None:
    """A boolean or float attention mask as an additive float mask. ``true_masks``: a boolean True
    means "masked out" (nn.MultiheadAttention) rather than "may attend" (SDPA, timm)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        masked = mask if true_masks else ~mask
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(masked, float("-inf"))
    return mask.to(dtype)


def causal_mask(n: int, like: torch.Tensor) -> torch.Tensor:
    """(N, N) additive mask: query i sees keys 0..i."""
    return torch.full((n, n), float("-inf"), dtype=like.dtype, device=like.device).triu(1)


def split_kv_weights(weight: torch.Tensor, bias: torch.Tensor | None, width: int):
    """Rows [width:2w] and [2w:3w] of a fused (3w, D) qkv projection: the key and value projections."""
    wk, wv = weight[width : 2 * width], weight[2 * width : 3 * width]
    bk = bv = None
    if bias is not None:
        bk, bv = bias[width : 2 * width], bias[2 * width : 3 * width]
    return wk, bk, wv, bv


try:
    from timm.layers.attention import Attention as TimmAttention
except ImportError:  # pragma: no cover - timm is a dependency
    TimmAttention = None

if TimmAttention is not None:

    @register_attention_internals(TimmAttention)
    class TimmAttentionInternals(AttentionInternals):
        """timm ``Attention``: fused ``qkv`` Linear, optional q/k norms, ``proj`` Linear; (B, N, D) tokens."""

        def __init__(self, module: nn.Module) -> None:
            super().__init__(module)
            if not isinstance(module.norm, nn.Identity) or getattr(module, "gate", None) is not None:
                raise NotImplementedError("prefix tuning: timm Attention with scale_norm or gating is not supported")
            self.num_heads = module.num_heads
            self.head_dim = module.head_dim

        @property
        def scale(self) -> float:
            return self.module.scale

        def heads(self, x: torch.Tensor) -> HeadsView:
            m = self.module
            q, k, v = split_heads(m.qkv(x), self.num_heads)
            return HeadsView(m.q_norm(q), m.k_norm(k), v, None, lambda y: rearrange(y, "b h n d -> b n (h d)"))

        def prefix_kv(self, c):
            m = self.module
            wk, bk, wv, bv = split_kv_weights(m.qkv.weight, m.qkv.bias, m.attn_dim)
            pk = rearrange(F.linear(c, wk, bk), "l (h d) -> h l d", h=self.num_heads)
            pv = rearrange(F.linear(c, wv, bv), "l (h d) -> h l d", h=self.num_heads)
            return m.k_norm(pk), pv

        def project(self, y, bias=False):
            return F.linear(y, self.module.proj.weight, self.module.proj.bias if bias else None)

        def plain_call(self, x, args, kwargs):
            # attn_drop is inert in a frozen eval-style backbone only when its p is 0 (timm's default).
            return (not args and set(kwargs) <= {"attn_mask", "is_causal"}
                    and not (self.module.training and self.module.attn_drop.p > 0))

        def call_mask(self, x, args, kwargs):
            # timm's forward(x, attn_mask=None, is_causal=False): SDPA semantics (bool True = may attend)
            attn_mask = args[0] if args else kwargs.get("attn_mask")
            is_causal = args[1] if len(args) > 1 else kwargs.get("is_causal", False)
            if is_causal:  # timm's explicit path: is_causal takes precedence over attn_mask
                return causal_mask(x.shape[1], x)
            return additive_mask(attn_mask, x.dtype, true_masks=False)


@register_attention_internals(nn.MultiheadAttention)
class MultiheadAttentionInternals(AttentionInternals):
    """``nn.MultiheadAttention`` used as self-attention (open_clip towers): fused ``in_proj_weight``."""

    def __init__(self, module: nn.MultiheadAttention) -> None:
        super().__init__(module)
        if not module._qkv_same_embed_dim or module.bias_k is not None:
            raise NotImplementedError("prefix tuning: MultiheadAttention needs a fused in_proj and no bias_k/v")
        self.num_heads = module.num_heads
        self.head_dim = module.head_dim

    def heads(self, x: torch.Tensor) -> HeadsView:
        m = self.module
        if not m.batch_first:
            x = rearrange(x, "n b c -> b n c")
        q, k, v = split_heads(F.linear(x, m.in_proj_weight, m.in_proj_bias), self.num_heads)
        if m.batch_first:
            restore = lambda y: rearrange(y, "b h n d -> b n (h d)")  # noqa: E731
        else:
            restore = lambda y: rearrange(y, "b h n d -> n b (h d)")  # noqa: E731
        return HeadsView(q, k, v, None, restore)

    def prefix_kv(self, c):
        m = self.module
        wk, bk, wv, bv = split_kv_weights(m.in_proj_weight, m.in_proj_bias, m.embed_dim)
        pk = rearrange(F.linear(c, wk, bk), "l (h d) -> h l d", h=self.num_heads)
        pv = rearrange(F.linear(c, wv, bv), "l (h d) -> h l d", h=self.num_heads)
        return pk, pv

    def project(self, y, bias=False):
        return F.linear(y, self.module.out_proj.weight, self.module.out_proj.bias if bias else None)

    KNOWN = ("key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")

    def _call(self, args: tuple, kwargs: dict) -> dict:
        """The call's arguments by name (forward(query, key, value, key_padding_mask, need_weights,
        attn_mask, average_attn_weights, is_causal))."""
        named = dict(zip(self.KNOWN, args))
        unknown = set(kwargs) - set(self.KNOWN)
        if len(args) > len(self.KNOWN) or unknown:
            raise TypeError(f"unexpected MultiheadAttention call arguments: {sorted(unknown)}")
        return {**named, **kwargs}

    def plain_call(self, x, args, kwargs):
        # open_clip calls attn(x, x, x, need_weights=False, attn_mask=...) (a causal mask in the text
        # tower): masks are reproduced by call_mask, so only weights, dropout and cross-attention fall back.
        try:
            call = self._call(args, kwargs)
        except TypeError:
            return False
        return plain_self_attention(self.module, x, call.get("key", x), call.get("value", x), None,
                                    call.get("need_weights", True), False)

    def call_mask(self, x, args, kwargs):
        call = self._call(args, kwargs)
        key, value = call.get("key", x), call.get("value", x)
        if key is not x or value is not x:
            raise ValueError("prefix tuning on nn.MultiheadAttention needs self-attention (key and value are the query)")
        m = self.module
        batch, n = (x.shape[0], x.shape[1]) if m.batch_first else (x.shape[1], x.shape[0])
        # bool True = masked out, float = added (MultiheadAttention's convention for both masks)
        mask = additive_mask(call.get("attn_mask"), x.dtype, true_masks=True)
        if mask is None and call.get("is_causal", False):
            mask = causal_mask(n, x)  # the frozen module refuses this call; the hint alone means causal
        if mask is not None and mask.dim() == 3:  # (B * heads, N, N) -> (B, heads, N, N)
            mask = rearrange(mask, "(b h) l s -> b h l s", b=batch)
        padding = additive_mask(call.get("key_padding_mask"), x.dtype, true_masks=True)
        if padding is not None:  # (B, N) over keys -> (B, 1, 1, N)
            padding = padding[:, None, None, :]
            mask = padding if mask is None else mask + padding
        return mask

    def pack(self, out):
        return out, None
