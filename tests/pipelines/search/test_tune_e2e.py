"""`vidpeft tune` end to end: a 2-trial ASHA search on tiny data, tracked on a real MLflow server."""

from __future__ import annotations

import csv
import json

import pytest

from pipelines.cli import main
from pipelines.cli.args import load_experiment
from tests.conftest import DEMO_CONFIG
from tests.pipelines.runtime.test_mlflow_server import mlflow_server  # noqa: F401  (the session's tracking server)

pytestmark = pytest.mark.e2e

# Grid order is trial order (one trial at a time): the second learning rate diverges, so ASHA
# compares it with the first at epoch 1 and stops it there.
SPACE = """
metric: val_loss
mode: min
params:
  optim.lr: {type: grid, values: [3.0e-3, 2.0]}
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from components.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("tune_data"), num_classes=4, clips_per_class=4,
                                  frames=8, size=32, seed=0)


def tune_args(manifest, uri, space, out, epochs=2):
    return ["tune", "--config", str(DEMO_CONFIG), "--set", f"data.manifest={manifest}",
            "--set", f"optim.epochs={epochs}", "--set", f"tracking.tracking_uri={uri}",
            "--set", "tracking.experiment=tune-e2e", "--space", str(space), "--trials", "1",
            "--scheduler", "asha", "--out", str(out)]


def test_a_search_on_missing_data_stops_in_one_line_before_ray(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    assert main(tune_args(tmp_path / "gone.parquet", f"sqlite:///{tmp_path}/m.db", space, tmp_path / "s")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gone.parquet" in err and "not found" in err
    assert not (tmp_path / "s").exists()


def test_asha_search_ends_with_a_best_config(ray_session, mlflow_server, tiny_data, tmp_path, capsys):  # noqa: F811
    from mlflow.tracking import MlflowClient

    from pipelines.run.inputs import prepare_config

    space, out = tmp_path / "space.yaml", tmp_path / "search"
    space.write_text(SPACE)
    assert main(tune_args(tiny_data, mlflow_server, space, out)) == 0
    printed = "".join(capsys.readouterr()).lower()
    assert "tensorboard" not in printed  # runs are tracked in MLflow: Tune writes no TensorBoard logs, hints none
    # Tune's status tables and result boxes only with --verbose; a line per trial, and no per-trial run table
    assert "trial status" not in printed and "result ──" not in printed and printed.count("ended after") == 2
    assert "best epoch by" not in printed
    assert "configuration for experiment" not in printed and "view detailed results" not in printed  # Tune's heading
    assert "placement group" not in printed  # freeing a stopped trial's resources is housekeeping (--verbose)
    assert list(out.rglob("progress.csv")) and not list(out.rglob("events.out.tfevents*"))
    # each trial trained in its own process (scaling.in_process auto, one local worker): no Train worker group,
    # so no placement group behind its epochs' results
    epochs = [row for f in out.rglob("progress.csv") for row in csv.DictReader(open(f)) if row.get("epoch")]
    assert epochs and all(row["train_placement_group"] == "" for row in epochs)

    # the best config: the good learning rate, a file `vidpeft train` takes as it is
    best = json.loads((out / "best.json").read_text())
    assert best["params"] == {"optim.lr": 0.003} and best["metric"] == "val_loss"
    cfg = load_experiment([str(out / "best.yaml")], [])
    assert cfg.optim.lr == 0.003 and cfg.optim.epochs == 2 and cfg.output_dir == ""
    assert cfg.tracking.parent_run_id == "" and cfg.tracking.tags == {}
    prepare_config(cfg)  # what `vidpeft train` checks first (manifest included)

    # ASHA stopped the diverging trial after its first epoch
    trials = {r["optim.lr"]: r for r in csv.DictReader(open(out / "trials.csv"))}
    assert (trials["0.003"]["state"], trials["0.003"]["epochs"]) == ("completed", "2")
    assert (trials["2.0"]["state"], trials["2.0"]["epochs"]) == ("stopped early", "1")
    # ... and its folder keeps what its finished epoch(s) earned: metrics.json (marked partial) and weights
    stopped, done = out / "trials" / trials["2.0"]["trial_id"], out / "trials" / trials["0.003"]["trial_id"]
    kept = json.loads((stopped / "metrics.json").read_text())
    assert kept["best_epoch"] in (0, 1) and "partial" in kept and (stopped / "weights.safetensors").is_file()
    assert "partial" not in json.loads((done / "metrics.json").read_text())  # a finished run's own file
    # ... and its Train workers' CPUs are free again: no later trial waits on a dead run's reservation
    from ray.util.placement_group import placement_group_table

    assert [pg for pg in placement_group_table().values() if pg["state"] != "REMOVED"] == []

    # MLflow on the server: one parent, one nested run per trial, nothing else
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("tune-e2e")
    runs = client.search_runs([exp.experiment_id])
    parent = client.get_run(best["parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert parent.data.tags["vidpeft.kind"] == "search" and parent.info.status == "FINISHED"
    assert abs(parent.data.metrics["best_val_loss"] - best["value"]) < 1e-9
    assert {"best.yaml", "best.json", "trials.csv", "space.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    by_lr = {r.data.params["optim.lr"]: r for r in children}
    good, bad = by_lr["0.003"], by_lr["2.0"]
    assert good.info.run_id == best["run_id"] and good.info.status == "FINISHED"
    assert bad.info.status == "KILLED" and bad.data.tags["vidpeft.stopped_early"] == "true"
    assert [m.step for m in client.get_metric_history(good.info.run_id, "val_loss")] == [0, 1]
    # ASHA's stop reaches the trial after its first report; its worker does not wait for the verdict
    # and may have logged the next (tiny) epoch by then: the run is still marked stopped (above)
    assert [m.step for m in client.get_metric_history(bad.info.run_id, "val_loss")][:1] == [0]
    assert {"config.yaml", "metrics.json", "weights"} <= {a.path for a in client.list_artifacts(good.info.run_id)}

    # the same command again restores the finished search: no trial reruns, no new run
    capsys.readouterr()
    assert main(tune_args(tiny_data, mlflow_server, space, out)) == 0
    assert "resuming the search" in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id])) == 3
    assert json.loads((out / "best.json").read_text())["trial_id"] == best["trial_id"]

    # a different search cannot be resumed in that folder
    assert main(tune_args(tiny_data, mlflow_server, space, out, epochs=3)) == 2
    assert "different search" in capsys.readouterr().err
