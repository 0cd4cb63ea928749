"""The module that replaces a frozen sublayer: frozen base first, then the adapters' residuals."""

from __future__ import annotations

import torch
from torch import nn

from components.adapters.base import AdapterLayer, SiteInfo


class AdaptedModule(nn.Module):
    """``out = base(x, ...) + sum(adapter(x, base_out))``; with zero-init adapters, out == base(x)."""

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
        out = self.base_layer(x, *args, **kwargs)
        # nn.MultiheadAttention-style modules return (output, weights): adapt the output only.
        primary = out[0] if isinstance(out, tuple) else out
        for layer in self.adapters.values():
            primary = primary + layer(x, out[0] if isinstance(out, tuple) else out)
        return (primary, *out[1:]) if isinstance(out, tuple) else primary
