"""Text adapter (Houlsby et al. 2019; M2-CLIP Eq. 9): ``A(z) = z + fc2(GELU(fc1(z)))``.

Placed before the FFN of the last text layer(s) by default: the ``pre_mlp`` residual tap of open_clip
blocks (``components/backbones/openclip_vit.py``), so the wrapper's ``x + delta(x)`` is exactly
Eq. 9 feeding both the FFN and the residual. ``fc2`` starts at zero: the adapter is the identity at
initialisation (the official code zero-inits only the biases, so its adapter is not).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.adapters.base import WIDTH_HELP, AdapterConfig, AdapterLayer, SiteInfo, Width, check_width, scaled_width
from components.adapters.registry import register_adapter
from components.config import cfg


@dataclass
class TextAdapterConfig(AdapterConfig):
    type: str = cfg("text_adapter", "adapter type")
    sites: list[str] = cfg(["pre_mlp"], "pre_mlp = before the FFN (paper); any site of the tower's spec")
    layers: list[int] = cfg([-1], "text blocks to adapt, counted from the end with negatives (paper's best: [-1])")
    bottleneck: Width = cfg(384, "hidden width of fc1/fc2 (official: 384)" + WIDTH_HELP)

    def __post_init__(self) -> None:
        check_width(self.bottleneck, "bottleneck")


class TextAdapter(AdapterLayer):
    def __init__(self, config: TextAdapterConfig, site: SiteInfo) -> None:
        super().__init__(config, site)
        r = scaled_width(config.bottleneck, site.dim)
        self.fc1 = nn.Linear(site.dim, r)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(r, site.dim)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


register_adapter("text_adapter", TextAdapterConfig, TextAdapter,
                 not_mergeable="a GELU between fc1 and fc2")
