"""Task heads and metrics: mAP and per-trait MSE by hand, and each task through VideoModel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.config import from_dict
from components.model import ModelConfig, build_model
from components.tasks import OCEAN_TRAITS, MetricAccumulator, mean_average_precision
from tests.conftest import TINY_VIT


def test_map_by_hand():
    scores = np.array([[0.9, 0.2, 0.5], [0.8, 0.7, 0.1], [0.3, 0.6, 0.9], [0.1, 0.4, 0.3]])
    targets = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]])
    # class 0: positives ranked 1st and 3rd -> AP = (1/1 + 2/3) / 2 = 5/6
    # class 1: its one positive ranked 3rd -> AP = 1/3
    # class 2: no positive in the set -> left out of the mean (MMAction2's definition)
    assert mean_average_precision(scores, targets) == pytest.approx((5 / 6 + 1 / 3) / 2)

    acc = MetricAccumulator("multi_label", 3)
    logits = torch.logit(torch.tensor(scores))  # the accumulator applies a sigmoid: same ranking
    acc.update(logits[:2], torch.tensor(targets[:2]))
    other = MetricAccumulator("multi_label", 3)
    other.update(logits[2:], torch.tensor(targets[2:]))
    acc.merge(other)  # data-parallel workers combine exactly
    assert acc.compute()["mAP"] == pytest.approx(7 / 12)


def test_regression_mse_per_ocean_trait():
    pred = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, 3.0, 1.0], [1.0, 3.0, 1.0, 0.0, 1.0]])
    acc = MetricAccumulator("regression", 5)
    acc.update(pred[:1], target[:1])
    acc.update(pred[1:], target[1:])
    out = acc.compute(names=list(OCEAN_TRAITS))
    expected = {"openness": 0.5, "conscientiousness": 2.0, "extraversion": 2.0, "agreeableness": 0.5, "neuroticism": 4.5}
    for trait, mse in expected.items():
        assert out[f"mse_{trait}"] == pytest.approx(mse)
    assert out["mse"] == pytest.approx(sum(expected.values()) / 5)


@pytest.mark.parametrize(
    "task,target",
    [
        ("single_label", torch.tensor([0, 2])),
        ("multi_label", torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])),  # multi-hot (B, K)
        ("regression", torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.2, 0.4]])),  # (B, R)
    ],
)
def test_tasks_through_video_model(task, target):
    cfg = from_dict(ModelConfig, {"backbone": TINY_VIT, "head": {"task": task},
                                  "adapters": [{"type": "mhva", "heads": 4, "bottleneck": 8}]})
    torch.manual_seed(0)
    model = build_model(cfg, 3)
    video = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    out = model({"video": video, "target": target})
    assert out["logits"].shape == (2, 3) and math.isfinite(out["loss"].item())
    out["loss"].backward()
    acc = MetricAccumulator(task, 3)
    acc.update(out["logits"], target, out["loss"].item())
    metrics = acc.compute()
    key = {"single_label": "top1", "multi_label": "mAP", "regression": "mse"}[task]
    assert math.isfinite(metrics[key])
