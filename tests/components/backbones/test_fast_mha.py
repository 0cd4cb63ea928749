"""The fast self-attention path computes what nn.MultiheadAttention computes, gradients included."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from components.backbones.fast_mha import SelfAttention, use_fast_self_attention


def pair(batch_first: bool):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=batch_first)
    fast = copy.deepcopy(ref)
    assert use_fast_self_attention(fast) == 1 and isinstance(fast, SelfAttention)
    return ref, fast


def causal(n: int, kind: str):
    upper = torch.ones(n, n, dtype=torch.bool).triu(1)
    return upper if kind == "bool" else torch.zeros(n, n).masked_fill(upper, float("-inf"))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_same_outputs_and_gradients_as_multihead_attention(batch_first, mask):
    ref, fast = pair(batch_first)
    x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    m = causal(5, mask) if mask else None
    outs, grads = [], []
    for module in (ref, fast):
        xi = x.clone().requires_grad_(True)
        out, weights = module(xi, xi, xi, need_weights=False, attn_mask=m)
        assert weights is None
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in module.parameters()])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_other_calls_use_the_general_path():
    ref, fast = pair(True)
    x, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    with torch.no_grad():
        out, weights = fast(x, x, x)  # attention weights asked for
        assert weights.shape == (2, 5, 5)
        torch.testing.assert_close(out, ref(x, x, x)[0])
        torch.testing.assert_close(fast(x, kv, kv, need_weights=False)[0], ref(x, kv, kv, need_weights=False)[0])
    assert fast.state_dict().keys() == ref.state_dict().keys()
