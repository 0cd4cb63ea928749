"""FLOP accounting of a training step: grouped (depthwise) convolutions' backward counted as it runs."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from components.flops import step_flop_counter


def _step_flops(counter, conv: torch.nn.Module, x: torch.Tensor) -> int:
    with counter:
        conv(x).sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("groups", [64, 8])
def test_a_grouped_convolutions_backward_costs_twice_its_forward(groups):
    conv = torch.nn.Conv1d(64, 64, 3, padding=1, groups=groups)
    x = torch.randn(4, 64, 50, requires_grad=True)
    forward = 2 * 4 * 50 * 64 * (64 // groups) * 3  # multiply-adds x 2 per output element
    assert _step_flops(step_flop_counter(), conv, x) == 3 * forward  # forward, input grad, weight grad
    assert _step_flops(FlopCounterMode(display=False), conv, x) > 3 * forward  # torch's own count is dense


def test_dense_and_frozen_convolutions_count_as_torch_counts_them():
    dense = torch.nn.Conv2d(3, 16, 3)
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    assert _step_flops(step_flop_counter(), dense, x) == _step_flops(FlopCounterMode(display=False), dense, x)
    frozen = torch.nn.Conv1d(32, 32, 3, groups=32).requires_grad_(False)  # input gradient only
    y = torch.randn(2, 32, 20, requires_grad=True)
    assert _step_flops(step_flop_counter(), frozen, y) == 2 * (2 * 2 * 18 * 32 * 3)
