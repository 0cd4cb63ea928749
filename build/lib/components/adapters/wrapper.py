"""The module that replaces a frozen sublayer: frozen base first, then the adapters' residuals."""

from __future__ import annotations

import torch
from torch import nn

from components.adapters.base import AdapterLayer, SiteInfo


def _primary(out):
    # nn.MultiheadAttention-style modules return (output, weights): adapters see and adapt the output.
    return out[0] if isinstance(out, tuple) else out


class AdaptedModule(nn.Module):
    """``out = base(x, ...) + sum(adapter(x, base_out))``; with zero-init adapters, out == base(x).

    One exception keeps a site to one pass: an adapter with ``replace_base(x, args, kwargs,
    need_frozen)`` may compute the frozen module's output itself together with its own change (prefix
    tuning: one q/k/v projection and fused attentions, instead of the frozen attention plus a
    recomputation). It returns (adapted output, frozen output if asked, else None), or None to let
    the frozen module run as usual. The other adapters at the site still get the frozen output.
    Adapters with ``takes_call = True`` also get the call's arguments, ``call=(args, kwargs)``
    (prefix tuning applies the call's attention masks).
    """

    def __init__(self, base_layer: nn.Module, site: SiteInfo) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.site = site
        self.adapters = nn.ModuleDict()

    def add(self, key: str, layer: AdapterLayer) -> None:
        if key in self.adapters:
            raise ValueError(f"{self.site.path}: an adapter named {key!r} is already attached")
        self.adapters[key] = layer

    def forward(self, x: torch.Tensor, *args, **kwargs):
        folded_key, adapted, frozen = None, None, None
        for key, layer in self.adapters.items():
            replace = getattr(layer, "replace_base", None)
            result = replace(x, args, kwargs, need_frozen=len(self.adapters) > 1) if replace else None
            if result is not None:
                folded_key, (adapted, frozen) = key, result
                break
        if folded_key is None:
            adapted = frozen = self.base_layer(x, *args, **kwargs)
        primary = _primary(adapted)
        for key, layer in self.adapters.items():
            if key != folded_key:
                extra = {"call": (args, kwargs)} if getattr(layer, "takes_call", False) else {}
                primary = primary + layer(x, _primary(frozen), **extra)
        return (primary, *adapted[1:]) if isinstance(adapted, tuple) else primary
