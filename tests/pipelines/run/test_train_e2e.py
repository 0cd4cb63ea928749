"""End to end through the real CLI: synthetic mp4s -> Ray Data -> Ray Train -> MLflow, then --resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from pipelines.run.checkpoints import latest_checkpoint
from pipelines.cli import main
from tests.conftest import DEMO_CONFIG

pytestmark = pytest.mark.e2e


def train_args(manifest, out, uri, epochs, *extra):
    return [
        "train", "--config", str(DEMO_CONFIG),
        "--set", f"data.manifest={manifest}",
        "--set", f"output_dir={out}",
        "--set", f"tracking.tracking_uri={uri}",
        "--set", f"optim.epochs={epochs}",
        *extra,
    ]


# The loop runs in this process (scaling.in_process auto, the default for one local worker: no Train workers, the
# checkpoints persisted to the same run folder by the driver). The same run in Ray Train workers, killed and
# resumed, with the store relative to the command's directory: tests/pipelines/run/test_faults.py.
def test_train_resume_and_tracking(ray_session, synth_data, tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    # the store as MLflow's docs write it, relative to the command's directory
    monkeypatch.chdir(tmp_path)
    out, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    ema = ("--set", "optim.ema_decay=0.5")  # an EMA of the trainable weights (docs/regularisers.md)
    assert main(train_args(synth_data, out, "sqlite:///mlflow.db", 4, *ema)) == 0
    said = capsys.readouterr().out
    assert "training in this process" in said, said
    first = json.loads((out / "metrics.json").read_text())
    assert first["last_epoch"] == 3 and first["best_epoch"] == first["epoch"]  # metrics.json: the best epoch's
    # 4 classes: chance is 0.25; the motion is learnable from frame order alone.
    assert first["val_top1"] >= 0.5, first
    # two corrupt files sit in the train split: skipped and counted every epoch, never fatal
    assert first["skipped_clips"] == 2 and first["skipped_clips_total"] == 8
    assert (out / "weights.safetensors").is_file() and (out / "config.yaml").is_file()
    first_ema = torch.load(f"{latest_checkpoint(out / 'ray')}/ema.pt", weights_only=True)
    assert first_ema["updates"] % 4 == 0 and first_ema["updates"] > 0  # one per optimizer step

    def sums(tensors):
        return sorted(round(float(t.double().sum()), 6) for t in tensors)

    # the run's weights (what export / evaluate / predict load) are the EMA copy, not the trained weights
    assert sums(load_file(str(out / "weights.safetensors")).values()) == sums(first_ema["shadow"])
    assert sums(first_ema["shadow"]) != sums(first_ema["trained"])

    client = MlflowClient(uri)
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.adapters.0.type"] == "bottleneck"
    assert len(client.get_metric_history(first["run_id"], "val_top1")) == 4
    assert run.data.metrics["trainable_pct"] > 0
    artifacts = {a.path for a in client.list_artifacts(first["run_id"])}
    assert {"config.yaml", "metrics.json", "weights"} <= artifacts

    # the same output dir without --resume is refused, with the way out in the message
    assert main(train_args(synth_data, out, "sqlite:///mlflow.db", 5)) == 2
    assert "--resume" in capsys.readouterr().err

    # --resume continues from the saved epoch (one more epoch only), in the same MLflow run
    assert main(train_args(synth_data, out, "sqlite:///mlflow.db", 5, *ema, "--resume")) == 0
    second = json.loads((out / "metrics.json").read_text())
    # the resumed run continued the EMA (its update count), it did not start a new one
    assert torch.load(f"{latest_checkpoint(out / 'ray')}/ema.pt")["updates"] == first_ema["updates"] // 4 * 5
    assert second["last_epoch"] == 4 and second["run_id"] == first["run_id"]
    # the best is chosen over both fits: never worse than the first fit's best
    assert second["val_top1"] >= first["val_top1"]
    assert second["skipped_clips_total"] == 10
    history = client.get_metric_history(first["run_id"], "val_top1")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
