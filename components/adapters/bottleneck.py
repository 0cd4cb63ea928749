"""Scaled parallel bottleneck adapter (He et al. 2021; AdaptFormer when the scale is fixed).

delta = s * up(ReLU(down(x))), computed from the wrapped sublayer's input and added to its output.
The up-projection starts at zero, so the adapter starts as the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.adapters.base import WIDTH_HELP, AdapterConfig, AdapterLayer, SiteInfo, Width, check_width, scaled_width, zero_linear
from components.adapters.registry import register_adapter
from components.config import cfg


@dataclass
class BottleneckConfig(AdapterConfig):
    type: str = cfg("bottleneck", "adapter type")
    bottleneck: Width = cfg(64, "hidden width r of the down/up projection" + WIDTH_HELP)
    scale: float = cfg(1.0, "initial value of the output scale s")
    learnable_scale: bool = cfg(True, "learn s (CM3T) or keep it fixed (AdaptFormer uses a fixed s)")
    dropout: float = cfg(0.0, "dropout on the bottleneck activations")

    def __post_init__(self) -> None:
        check_width(self.bottleneck, "bottleneck")


class BottleneckAdapter(AdapterLayer):
    def __init__(self, config: BottleneckConfig, site: SiteInfo) -> None:
        super().__init__(config, site)
        r = scaled_width(config.bottleneck, site.dim)
        self.down = nn.Linear(site.dim, r)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(config.dropout)
        self.up = zero_linear(r, site.dim)
        self.register_scale(config.scale, config.learnable_scale)

    def forward(self, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.drop(self.act(self.down(x))))


register_adapter("bottleneck", BottleneckConfig, BottleneckAdapter,
                 not_mergeable="a ReLU between its down and up projections")
