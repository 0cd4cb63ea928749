"""Training health detector on synthetic metric sequences, and the gradient probe on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from components.engine.health import GradProbe, HealthWatch, prediction_share
from components.engine.step import TrainStep
from components.tasks import make_task

LN6 = math.log(6)


def feed(watch: HealthWatch, epochs: list[dict]) -> list[list[str]]:
    """The signals said after each epoch; an epoch dict holds metrics plus optional share / dead."""
    out = []
    for e in epochs:
        e = dict(e)
        found = watch.update(e, pred_share=e.pop("share", None), dead=e.pop("dead", None))
        out.append([v.signal for v in found])
    return out


def test_one_class_for_n_evaluations_is_a_collapse_and_said_once():
    w = HealthWatch(num_classes=6, patience=3)
    said = feed(w, [{"train_loss": 1.0, "share": s} for s in (1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0)])
    assert said == [[], [], [], [], [], ["one_class"], []]  # the streak restarts at 0.5; said once


def test_a_run_that_learns_is_healthy():
    w = HealthWatch(num_classes=6, patience=2)
    said = feed(w, [{"train_loss": loss, "val_top1": 0.2 + i / 10, "share": 0.4}
                    for i, loss in enumerate((LN6, 1.5, 1.1, 0.8, 0.6))])
    assert said == [[]] * 5


def test_train_loss_flat_at_ln_c():
    w = HealthWatch(num_classes=6, patience=3, flat_tolerance=0.02)
    said = feed(w, [{"train_loss": v} for v in (LN6 * 1.01, LN6 * 0.995, LN6 * 1.03, LN6, LN6, LN6)])
    assert said == [[], [], [], [], [], ["flat_loss"]]  # 1.03 is outside 2%: the streak restarts
    v = HealthWatch(num_classes=6, patience=1).update({"train_loss": LN6})[0]
    assert v.status == "collapsed" and "flat at ln 6 = 1.792" in v.line and "lr" in v.line


def test_nonfinite_values_at_once_and_regression_has_no_chance_loss():
    w = HealthWatch(num_classes=0, patience=3)
    assert feed(w, [{"train_loss": 0.0}, {"train_loss": float("nan"), "val_mse": float("inf"), "stop_reason": "x"}]) \
        == [[], ["nonfinite"]]
    v = HealthWatch().update({"train_loss": float("nan"), "val_mse": float("inf")})[0]
    assert v.status == "nonfinite" and "non-finite train_loss, val_mse" in v.line


def test_dead_modules_are_a_warning_naming_them():
    v = HealthWatch().update({"train_loss": 1.0}, dead=[f"blocks.{i}.adapter.up" for i in range(5)])[0]
    assert v.status == "stalled" and "5 trainable module(s)" in v.line and "and 2 more" in v.line


def test_prediction_share_from_a_single_label_accumulator():
    acc = make_task("single_label", 3).accumulator()
    acc.update(torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0]]), torch.tensor([0, 1, 2, 0]))
    other = make_task("single_label", 3).accumulator()
    other.update(torch.tensor([[5.0, 0, 0]]), torch.tensor([0]))
    acc.merge(other)  # the counts add up across workers
    assert prediction_share(acc) == pytest.approx(4 / 5)
    assert prediction_share(make_task("regression", 2).accumulator()) is None


class Gated(nn.Module):
    """A zero gate in front of an adapter: the adapter's gradient is zero until the gate moves."""

    def __init__(self, gate: float) -> None:
        super().__init__()
        self.adapter = nn.Linear(4, 2)
        self.gate = nn.Parameter(torch.tensor(gate))
        self.frozen = nn.Linear(4, 2).requires_grad_(False)

    def forward(self, batch):
        out = self.frozen(batch["x"]) + self.gate * self.adapter(batch["x"])
        return {"loss": nn.functional.cross_entropy(out, batch["y"]), "logits": out}


@pytest.mark.parametrize("gate, dead", [(0.0, ["adapter"]), (1.0, [])])
def test_grad_probe_finds_modules_without_gradient(gate, dead):
    torch.manual_seed(0)
    model = Gated(gate)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)  # lr 0: the gate stays
    probe = GradProbe(model)
    step = TrainStep(model, opt)
    step.on_grads = probe.observe
    for _ in range(4):
        step({"x": torch.randn(8, 4), "y": torch.randint(0, 2, (8,))})
    assert probe.steps == 3 and probe.dead() == dead  # the first step is not looked at
    assert probe.dead() == []  # reset: no step observed since


def test_grad_probe_does_not_call_the_zero_init_step_stalled():
    """A zero-initialised up-projection gives its down-projection a zero gradient at the first step by design:
    an epoch of one step (a tiny dataset) is not stalled; the down-projection moves from the second step on."""
    torch.manual_seed(0)

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down, self.up = nn.Linear(4, 3), nn.Linear(3, 2)
            nn.init.zeros_(self.up.weight), nn.init.zeros_(self.up.bias)

        def forward(self, batch):
            out = self.up(torch.relu(self.down(batch["x"])))
            return {"loss": nn.functional.cross_entropy(out, batch["y"]), "logits": out}

    model = Residual()
    probe = GradProbe(model)
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.5))
    down_moved = []

    def observe():
        down_moved.append(bool(model.down.weight.grad.any()))
        probe.observe()

    step.on_grads = observe
    batch = {"x": torch.randn(8, 4), "y": torch.randint(0, 2, (8,))}
    step(batch)
    assert probe.dead() == []  # epoch 1 of one step: nothing said
    step(batch)
    assert probe.steps == 1 and probe.dead() == []  # epoch 2: the down-projection got its gradient
    assert down_moved == [False, True]  # zero at the first step by design, not after
