"""LoRA (Hu et al. 2021): a low-rank update ``W + (alpha / r) * B A`` of the frozen linear weights at a site.

Sites: ``attn`` (the q, k, v and output projections; ``targets`` picks which) and ``mlp`` (every linear
inside the MLP). The update is a weight, not an activation: every backbone family keeps its q/k/v in one
fused projection (timm/Swin ``qkv``, open_clip's ``nn.MultiheadAttention.in_proj_weight``, a parameter no
submodule carries), so LoRA on q means a delta on the first third of the fused weight's rows. The layer
runs the frozen module once with its weights replaced by ``W + delta`` (``torch.func.functional_call``:
same kernels, same fast paths), which also makes the merge exact: ``merge_into_base`` adds the same delta
to the frozen weights in place.

``B`` starts at zero, so the update is exactly zero at init and the adapted site returns the frozen
output bit for bit. ``dropout`` is rank dropout: in training each of the r components of ``B A`` is
dropped with that probability (the rest rescaled); input dropout would make the update depend on the
activations, which a weight update cannot express.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from components.adapters.base import AdapterConfig, AdapterLayer, SiteInfo
from components.adapters.registry import register_adapter
from components.config import ConfigError, cfg

ATTN_TARGETS = ("q", "k", "v", "out")


@dataclass
class LoRAConfig(AdapterConfig):
    type: str = cfg("lora", "adapter type")
    sites: list[str] = cfg(["attn"], "attn (q/k/v/out projections, see targets) and/or mlp (every MLP linear)")
    targets: list[str] = cfg(["q", "k", "v", "out"], "attention projections to adapt at attn sites: q, k, v, out")
    rank: int = cfg(8, "rank r of the update B A")
    alpha: float = cfg(16.0, "the update is scaled by alpha / rank")
    dropout: float = cfg(0.0, "rank dropout in training: probability of dropping each of the r components")

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise ValueError(f"rank must be positive, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        bad = [s for s in self.sites if s not in ("attn", "mlp")]
        if bad or not self.sites:
            raise ValueError(f"lora sites must be attn and/or mlp, got {self.sites}")
        bad = [t for t in self.targets if t not in ATTN_TARGETS]
        if bad or not self.targets:
            raise ValueError(f"lora targets must be among {list(ATTN_TARGETS)}, got {self.targets}")


@dataclass(frozen=True)
class WeightSlice:
    """Rows [start, stop) of the frozen weight at ``param`` (a path inside the site's module)."""

    param: str
    start: int
    stop: int
    in_features: int


def attention_weights(module: nn.Module) -> tuple[str, str]:
    """(fused q/k/v weight, output weight) of an attention module, by parameter path."""
    if isinstance(module, nn.MultiheadAttention):  # open_clip towers (and their fast-path subclass)
        if not module._qkv_same_embed_dim:
            raise ConfigError("lora: nn.MultiheadAttention with separate q/k/v weights is not supported")
        return "in_proj_weight", "out_proj.weight"
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    if isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear):  # timm Attention, torchvision Swin
        return "qkv.weight", "proj.weight"
    raise ConfigError(f"lora: attention module {type(module).__name__} has no fused qkv/proj or in_proj/out_proj")


def site_slices(module: nn.Module, site: str, targets: list[str]) -> dict[str, WeightSlice]:
    """Target name -> the weight rows LoRA updates, for an ``attn`` or ``mlp`` site's module."""
    if site == "mlp":
        linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"lora: the mlp module {type(module).__name__} holds no nn.Linear")
        return {n.replace(".", "_"): WeightSlice(f"{n}.weight", 0, m.out_features, m.in_features) for n, m in linears}
    fused, out = attention_weights(module)
    w_fused, w_out = module.get_parameter(fused), module.get_parameter(out)
    third = w_fused.shape[0] // 3  # rows: q, then k, then v
    rows = {"q": (fused, 0), "k": (fused, third), "v": (fused, 2 * third)}
    slices = {}
    for t in targets:
        if t == "out":
            slices[t] = WeightSlice(out, 0, w_out.shape[0], w_out.shape[1])
        else:
            param, start = rows[t]
            slices[t] = WeightSlice(param, start, start + third, w_fused.shape[1])
    return slices


class LowRank(nn.Module):
    """One update: A (r, in) Kaiming-uniform like nn.Linear, B (out, r) zero."""

    def __init__(self, rank: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))


class LoRA(AdapterLayer):
    def __init__(self, config: LoRAConfig, site: SiteInfo) -> None:
        super().__init__(config, site)
        self.slices = site_slices(site.base, site.site, config.targets)
        self.updates = nn.ModuleDict(
            {name: LowRank(config.rank, s.in_features, s.stop - s.start) for name, s in self.slices.items()})
        self.scaling = config.alpha / config.rank

    def deltas(self) -> dict[str, torch.Tensor]:
        """Parameter path -> the full-size update of that frozen weight (zero rows where no target)."""
        keep = None
        p = self.config.dropout
        if self.training and p > 0:
            keep = torch.bernoulli(torch.full((self.config.rank,), 1 - p, device=self.scaling_device())) / (1 - p)
        by_param: dict[str, list[tuple[WeightSlice, torch.Tensor]]] = {}
        for name, s in self.slices.items():
            u = self.updates[name]
            b = u.B if keep is None else u.B * keep
            by_param.setdefault(s.param, []).append((s, self.scaling * (b @ u.A)))  # (rows, in)
        out = {}
        for param, parts in by_param.items():
            weight = self.base.get_parameter(param)
            pieces, row = [], 0
            for s, d in sorted(parts, key=lambda sd: sd[0].start):
                if s.start > row:
                    pieces.append(weight.new_zeros(s.start - row, weight.shape[1]))
                pieces.append(d.to(weight.dtype))
                row = s.stop
            if row < weight.shape[0]:
                pieces.append(weight.new_zeros(weight.shape[0] - row, weight.shape[1]))
            out[param] = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        return out

    def scaling_device(self) -> torch.device:
        return next(iter(self.updates.values())).A.device

    def _adapted(self, x: torch.Tensor, args: tuple, kwargs: dict):
        weights = {param: self.base.get_parameter(param) + d for param, d in self.deltas().items()}
        return functional_call(self.base, weights, (x, *args), kwargs)

    def replace_base(self, x: torch.Tensor, args: tuple, kwargs: dict, need_frozen: bool):
        """The site's output with the updated weights (and the frozen one when other adapters need it)."""
        frozen = self.base(x, *args, **kwargs) if need_frozen else None
        return self._adapted(x, args, kwargs), frozen

    takes_call = True  # the residual form below re-runs the site with the call's own arguments

    def forward(self, x: torch.Tensor, base_out: torch.Tensor, call: tuple = ((), {})) -> torch.Tensor:
        # only when another adapter at this site already replaced the frozen call: the residual form
        out = self._adapted(x, *call)
        return (out[0] if isinstance(out, tuple) else out) - base_out

    @torch.no_grad()
    def merge_into_base(self) -> None:
        """Add the (eval-mode) update to the frozen weights in place: the site then needs no adapter."""
        was = self.training
        self.eval()
        try:
            for param, d in self.deltas().items():
                self.base.get_parameter(param).add_(d)
        finally:
            self.train(was)


register_adapter("lora", LoRAConfig, LoRA)  # mergeable: it has merge_into_base
