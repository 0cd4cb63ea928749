"""End to end: a tiny run made to blow up (lr 100) is said to be unhealthy in one line, tagged in a real
MLflow store, and ended by optim.stop_on_collapse after its first evaluation."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main
from tests.pipelines.run.test_train_e2e import train_args

pytestmark = pytest.mark.e2e


def test_a_run_that_blows_up_is_said_tagged_and_stopped(ray_session, synth_data, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    out, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    assert main(train_args(synth_data, out, uri, 3, "--set", "optim.lr=100", "--set", "optim.warmup_epochs=0",
                           "--set", "optim.collapse_patience=1", "--set", "optim.stop_on_collapse=true")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["last_epoch"] == 0  # stopped after the first of 3 epochs
    assert metrics["stop_reason"].startswith("optim.stop_on_collapse: nonfinite (non-finite ")
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith("health: "))
    assert line.startswith("health: nonfinite: non-finite ") and "likely causes: lr too high" in line
    run = MlflowClient(uri).get_run(metrics["run_id"])
    assert run.data.tags["vidpeft.health"] == "nonfinite" and run.info.status == "FINISHED"
    assert 0 < run.data.metrics["val_pred_share"] <= 1  # the predicted-class share is logged every epoch
