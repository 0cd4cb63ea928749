"""QuickGELU (OpenAI CLIP's ``x * sigmoid(1.702 x)``) as one fused activation with a one-kernel backward.

open_clip's ``QuickGELU`` runs three elementwise kernels forward (scale, sigmoid, multiply), keeps two
full-size tensors (``x`` and the sigmoid) for backward, and its backward runs about five more
(two products, ``sigmoid_backward``, the scale, the sum of both paths). In a ViT-B/16 CLIP tower at
8 frames each is a (1576, 3072) tensor per block: 48 ms CPU per block forward + backward, about 6% of
an M2-CLIP training step on the benchmark CPU (``benchmarks/optimisations.py --only quickgelu``).

The same function, written through SiLU: ``x * sigmoid(a x) = silu(a x) / a`` with ``a = 1.702``, and
``d/dx [silu(a x) / a] = silu'(a x)``: forward is scale, SiLU, unscale (in place); backward is one
``silu_backward`` on the saved ``a x``. One saved tensor instead of two. Equal to open_clip's up to
float rounding (tests/components/backbones/test_perf_equivalence.py). The module swap keeps names and state dicts
(QuickGELU has no parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SCALE = 1.702


class _QuickGELUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        scaled = x * _SCALE
        ctx.save_for_backward(scaled)
        return F.silu(scaled).div_(_SCALE)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (scaled,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad, scaled)


class FastQuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return F.silu(x * _SCALE).div_(_SCALE)  # no graph: nothing to save
        return _QuickGELUFunction.apply(x)


def use_fast_quick_gelu(root: nn.Module) -> int:
    """Swap every open_clip ``QuickGELU`` under ``root`` for ``FastQuickGELU``; returns how many."""
    from open_clip.transformer import QuickGELU

    count = 0
    for module in root.modules():
        if type(module) is QuickGELU:
            module.__class__ = FastQuickGELU
            count += 1
    return count
