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


def _count(family: str, checkpointing: bool, finetune: str = "adapters"):
    """count_step over one real step of a tiny model, after a warm-up step (as the GPU suite does)."""
    from components.config import from_dict
    from components.engine import TrainStep, make_optimizer, trainable_groups
    from components.flops import count_step
    from components.model import ModelConfig, build_model
    from tests.components.engine.test_training_levers import BACKBONES, batch

    torch.manual_seed(0)
    raw = {"backbone": BACKBONES[family], "head": {"num_outputs": 3}, "adapters": [{"type": "mhva", "bottleneck": 8}],
           "finetune": finetune, "grad_checkpointing": checkpointing}
    model = build_model(from_dict(ModelConfig, raw), 3, None).train()
    step = TrainStep(model, make_optimizer(trainable_groups(model, 1e-3), 1e-3, 0.0))
    clips = batch()
    step(clips)
    counted = count_step(lambda: step(clips), model)
    assert "forward" not in model.__dict__  # the instance is as it was
    return counted


@pytest.mark.parametrize("family", ["timm_vit", "video_swin"])
def test_a_step_is_split_into_what_it_needs_and_what_checkpointing_recomputes(family):
    plain, ckpt = _count(family, False), _count(family, True)
    assert plain.recomputed == 0 and plain.model == plain.executed
    assert ckpt.forward == plain.forward and ckpt.recomputed > 0
    assert ckpt.model == plain.model  # model FLOPs do not depend on how the step saves memory
    assert ckpt.executed == plain.executed + ckpt.recomputed
    assert ckpt.recomputed < ckpt.forward  # the head and the patch embedding are not recomputed


def test_a_frozen_backbone_costs_less_than_three_forwards():
    adapters, full = _count("timm_vit", False), _count("timm_vit", False, finetune="full")
    assert adapters.model / adapters.forward < 2.6 < full.model / full.forward <= 3.0
