"""The training loop's optimizer: AdamW with the fused kernel where PyTorch has one."""

from __future__ import annotations

import torch

from components.engine import make_optimizer
from pipelines.config import ExperimentConfig


def test_fused_adamw_on_cpu_with_param_groups_and_the_configured_hyperparameters():
    cfg = ExperimentConfig()
    cfg.optim.lr, cfg.optim.weight_decay = 0.01, 0.1
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.zeros(()))  # a 0-d learnable scale too
    opt = make_optimizer([{"params": [a]}, {"params": [b], "lr": 0.005}], cfg.optim.lr, cfg.optim.weight_decay)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.005]
    assert opt.defaults["weight_decay"] == 0.1
    (a.sum() + 2 * b).backward()
    opt.step()
    # Adam's first step moves each parameter by lr against its gradient's sign (plus decoupled decay)
    torch.testing.assert_close(a.detach(), torch.full((3,), 1 - 0.01 * 0.1 - 0.01), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.detach(), torch.tensor(-0.005), atol=1e-6, rtol=0)
