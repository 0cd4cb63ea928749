"""What every adapter shares: its config base, where it sits, and the per-forward context.

An adapter layer is built once per injection site from ``(config, SiteInfo)`` and called by
``AdaptedModule`` as ``layer(x, base_out) -> delta``: ``x`` is the input of the frozen module it
wraps, ``base_out`` that module's output, and ``delta`` is added to the output. Every layer must
return an all-zero delta at initialisation, so an adapted model equals its frozen backbone at step 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn

from components.config import cfg
from components.token_layout import TokenLayout


@dataclass
class AdapterConfig:
    """Fields every adapter type has; each type subclasses this with its own fields."""

    type: str = cfg("", "adapter type (a registered name, e.g. bottleneck, mhva, prefix, caa, ted)")
    name: str = cfg("", "key of this adapter inside each wrapped module; defaults to the type")
    sites: list[str] = cfg(["mlp"], "backbone sites to attach to, as the backbone spec names them (attn, mlp, block)")
    layers: list[int] = cfg([], "block indices to adapt (negative counts from the end); empty = all blocks")
    init_from: str | None = cfg(None, "checkpoint (run dir or .safetensors) to initialise this adapter's weights from")
    trainable: bool = cfg(True, "false freezes this adapter (staged training: train MHVA+PT, then only CAA)")
    train_only: list[str] = cfg([], "parts of this adapter that train, by submodule or parameter name inside it "
                                "(e.g. [fusion]: a fusion stage on CAAs loaded from the previous stage); empty = all")
    freeze: list[str] = cfg([], "parts of this adapter kept frozen at their initial (or init_from) values, by name "
                            "(e.g. [fusion]: the CAAs train before their fusion does)")

    @property
    def key(self) -> str:
        return self.name or self.type


@dataclass
class SiteInfo:
    """One injection point: the frozen module and what an adapter needs to know about it."""

    path: str  # dotted module path inside the backbone, e.g. "blocks.3.attn"
    site: str  # the spec's site name, e.g. "attn"
    block_index: int
    dim: int  # channel width at the site (input == output width for attn/mlp/block)
    num_heads: int
    family: str
    layout: TokenLayout
    context: "ForwardContext"
    base: nn.Module = field(repr=False, default=None)  # the frozen module (not registered twice)


class ForwardContext:
    """Per-forward state shared by all adapters of one model (set by the model before each call).

    Holds the clip length, so per-frame token tensors can be regrouped over time, and side-modality
    features with their presence masks for cross-attention adapters.
    """

    def __init__(self) -> None:
        self.num_frames: int = 1
        self.side: dict[str, torch.Tensor] = {}
        self.side_mask: dict[str, torch.Tensor] = {}
        self.extra: dict[str, Any] = {}
        # Static, set once by the model before injection: side-modality feature widths by name
        # (from ModelConfig.modalities), so cross-attention adapters can size their projections.
        self.modality_dims: dict[str, int] = {}
        # ... and tokens per clip: 1 = side input (B, dim), M > 1 = a sequence (B, M, dim)
        self.modality_tokens: dict[str, int] = {}
        # Every adapter layer built for this model, by (block index, adapter key): lets one adapter
        # reuse another's weights in the same block (CAA sharing the MHVA down-projection).
        self.layers: dict[tuple[int, str], list["AdapterLayer"]] = {}

    def find_layer(self, block_index: int, key: str, site: str = "") -> "AdapterLayer":
        """The adapter named ``key`` in block ``block_index`` (the one at ``site`` if there are several)."""
        found = self.layers.get((block_index, key), [])
        if len(found) > 1:
            found = [layer for layer in found if layer.site.site == site] or found
        if len(found) != 1:
            where = sorted({layer.site.site for layer in found})
            raise ValueError(
                f"block {block_index}: expected one adapter named {key!r}, found {len(found)} (sites {where})"
            )
        return found[0]

    def set(self, num_frames: int, side: dict | None = None, side_mask: dict | None = None) -> None:
        self.num_frames = num_frames
        self.side = dict(side or {})
        self.side_mask = dict(side_mask or {})


# An adapter width: an absolute number of channels, or a multiple of the block width at the site
# written like "0.25x" (so one preset fits any backbone: on Video Swin, whose width doubles per
# stage, the adapters stay the same share of every stage).
Width = Union[int, str]
WIDTH_HELP = "; an integer, or a multiple of the block width at the site like 0.25x"
_RATIO = re.compile(r"^(\d+(\.\d*)?|\.\d+)x$")


def check_width(value: Width, key: str) -> None:
    """A ValueError naming ``key`` unless ``value`` is a positive integer or a positive ratio like 0.25x."""
    if isinstance(value, str):
        if not _RATIO.match(value.strip()) or float(value.strip()[:-1]) <= 0:
            raise ValueError(f"{key} must be a positive integer or a ratio of the block width like 0.25x, got {value!r}")
    elif value <= 0:
        raise ValueError(f"{key} must be positive, got {value}")


def scaled_width(value: Width, dim: int) -> int:
    """The width in channels at a site ``dim`` wide: ``value`` itself, or round(ratio x dim) (at least 1)."""
    if isinstance(value, str):
        return max(1, round(float(value.strip()[:-1]) * dim))
    return value


def zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer that starts at exactly zero (weight and bias): what makes an adapter the identity at init."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class AdapterLayer(nn.Module):
    """Base class: keeps a non-registered handle to the frozen module it adapts."""

    def __init__(self, config: AdapterConfig, site: SiteInfo) -> None:
        super().__init__()
        self.config = config
        self.site = site
        # A plain list hides the base module from nn.Module registration: its weights stay owned
        # (and frozen) by the backbone, not duplicated into this adapter's state_dict.
        self._base_holder = [site.base]
        site.context.layers.setdefault((site.block_index, config.key), []).append(self)

    @property
    def base(self) -> nn.Module:
        return self._base_holder[0]

    def register_scale(self, value: float, learnable: bool) -> None:
        """The output scale s: a parameter (CM3T's learnable s) or a fixed buffer (AdaptFormer)."""
        scale = torch.tensor(float(value))
        if learnable:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)

    @property
    def context(self) -> ForwardContext:
        return self.site.context

    def forward(self, x: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
