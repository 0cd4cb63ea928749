"""Campaigns: cells keyed by their resolved config, run as Tune trials, tabulated from MLflow; a rerun
runs nothing that finished."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from components.config import ConfigError
from pipelines.search.campaign import cell_key, expand, load_campaign
from pipelines.cli import main
from tests.conftest import DEMO_CONFIG
from pipelines.search.report import epochs_to_converge

ROOT = Path(__file__).resolve().parents[3]

CAMPAIGN = """
name: e2e-grid
config: [{demo}]
set: [optim.epochs=1, "tracking.tracking_uri={uri}", tracking.experiment=campaign-e2e,
      scaling.cpus_per_worker=0.5, data.decode_cpus=0.25]
metric: val_top1
seeds: [0]
datasets:
  a: {{label: Motion A, set: [data.manifest={a}]}}
  b: {{label: Motion B, set: [data.manifest={b}]}}
variants:
  adapters: {{label: Adapters}}
  # Train workers for the probe's cells; the adapters' cells train in their trials' own processes (auto)
  linear: {{label: Linear probe, set: [model.finetune=linear, "model.adapters=[]", "model.modalities=[]",
                                      scaling.in_process=false]}}
# one cell at a time, the default: two Train-worker cells at once on the lane's 2 CPUs starved each other's
# decoders for minutes (Ray Data: "Cluster resources are not enough to run any task"; docs/testing.md)
max_concurrent: 1
"""


def write_campaign(tmp_path, uri="sqlite:////tmp/x.db", a="/data/a.parquet", b="/data/b.parquet",
                   adapters: bool = True) -> Path:
    """The campaign above; ``b=None``: dataset a only; ``adapters=False``: the linear probe only."""
    path = tmp_path / "campaign.yaml"
    text = CAMPAIGN.format(demo=DEMO_CONFIG, uri=uri, a=a, b=b)
    drop = [*(["Motion B"] if b is None else []), *([] if adapters else ["{label: Adapters}"])]
    path.write_text("".join(ln for ln in text.splitlines(keepends=True) if not any(d in ln for d in drop)))
    return path


def test_cell_identity_is_the_config_not_where_it_runs(tmp_path):
    path = write_campaign(tmp_path)
    cells = expand(load_campaign(path), path, [], tmp_path / "camp")
    assert [c.name for c in cells] == ["a/adapters/seed=0", "b/adapters/seed=0", "a/linear/seed=0", "b/linear/seed=0"]
    assert len({c.key for c in cells}) == 4
    data = cells[0].data
    moved = json.loads(json.dumps(data))
    moved.update(output_dir="/elsewhere", name="other")
    moved["tracking"].update(tracking_uri="http://127.0.0.1:1", parent_run_id="p", tags={"x": "y"})
    assert cell_key(moved) == cells[0].key
    changed = json.loads(json.dumps(data))
    changed["optim"]["lr"] = 0.5
    assert cell_key(changed) != cells[0].key
    # the same campaign in another folder: same keys; another seed or --set: new keys
    assert [c.key for c in expand(load_campaign(path), path, [], tmp_path / "other")] == [c.key for c in cells]
    assert cells[0].key not in {c.key for c in expand(load_campaign(path), path, ["optim.lr=0.01"], tmp_path)}


def test_a_bad_cell_stops_the_campaign_before_it_starts(tmp_path):
    path = write_campaign(tmp_path)
    path.write_text(path.read_text().replace("model.finetune=linear", "model.finetun=linear"))
    with pytest.raises(ConfigError, match=r"cell a/linear/seed=0.*model.finetun"):
        expand(load_campaign(path), path, [], tmp_path)
    path.write_text("name: x\nseeds: [0]\ndatasets: {a: {}}\nvariants: {v: {sett: []}}\n")
    with pytest.raises(ConfigError, match=r"campaign.yaml.*variants.v.sett"):
        load_campaign(path)


def test_cells_whose_data_is_missing_stop_the_campaign_in_one_line(tmp_path, capsys):
    """Checked as `vidpeft train` checks a run, before Ray starts: not one Tune traceback per cell."""
    from components.data.synth import make_synthetic_dataset

    a = make_synthetic_dataset(tmp_path / "a", num_classes=4, clips_per_class=4, frames=8, size=32, seed=0)
    path = write_campaign(tmp_path, uri=f"sqlite:///{tmp_path}/mlflow.db", a=a, b=tmp_path / "gone.parquet")
    assert main(["ablate", "--campaign", str(path), "--out", str(tmp_path / "camp")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "2 of 4 cells cannot start" in err and "gone.parquet" in err
    assert "b/adapters/seed=0" in err and "a/adapters" not in err
    assert not (tmp_path / "camp").exists()  # nothing started, nothing written


@pytest.mark.parametrize("name", ["demo.yaml", "cm3t_table1.yaml"])
def test_shipped_campaigns_resolve_every_cell(name, tmp_path):
    path = ROOT / "tune_spaces" / "campaigns" / name
    camp = load_campaign(path)
    cells = expand(camp, path, [], tmp_path)
    assert len(cells) == len(camp.datasets) * len(camp.variants) * len(camp.seeds) == len({c.key for c in cells})


def test_epochs_to_converge_is_the_first_epoch_within_a_point_of_the_best():
    assert epochs_to_converge([(0, 0.2), (1, 0.5), (2, 0.695), (3, 0.70), (4, 0.6)], "max") == 3
    assert epochs_to_converge([(1, 0.9), (0, 1.5), (2, 0.895)], "min") == 2
    assert epochs_to_converge([], "max") is None


@pytest.mark.e2e
def test_campaign_table_and_rerun_runs_nothing(ray_session, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from components.data.synth import make_synthetic_dataset

    # one cell: the linear probe in Train workers inside its Tune trial (the one e2e of that path; a trial training
    # in its own process: test_tune_e2e.py). Every cell is a full run on the slower 2-core machine; a table of
    # two datasets x two variants: test_campaign_views.py
    a = make_synthetic_dataset(tmp_path / "a", num_classes=4, clips_per_class=4, frames=8, size=32, seed=0)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = write_campaign(tmp_path, uri, a, None, adapters=False)
    out = tmp_path / "camp"
    assert main(["ablate", "--campaign", str(path), "--out", str(out)]) == 0

    rows = list(csv.DictReader(open(out / "report.csv")))
    assert [(r["variant"], r["dataset"]) for r in rows] == [("linear", "a")]
    row = rows[0]
    assert 0.0 <= float(row["mean"]) <= 1.0 and row["seeds_done"] == "1" and row["epochs_to_converge"] == "1"
    assert float(row["gflops"]) > 0
    # the papers' column does not count the head: a linear probe trains 0% of it, the head alone more
    assert float(row["trainable_pct"]) == 0 < float(row["trainable_pct_with_head"])
    md = (out / "report.md").read_text()
    assert ("| Method | Trainable % | Trainable % (with head) | GFLOPs | Motion A val_top1 (%) | Motion A paper | "
            "Motion A epochs |") in md
    assert "| Linear probe |" in md and "±" in md
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"

    client = MlflowClient(uri)
    parent_id = json.loads((out / "campaign.json").read_text())["parent_run_id"]
    children = client.search_runs([client.get_run(parent_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent_id}'")
    assert [(r.data.tags["vidpeft.dataset"], r.data.tags["vidpeft.variant"], r.info.status) for r in children] == [
        ("a", "linear", "FINISHED")]
    metrics_files = sorted(out.glob("cells/*/metrics.json"))
    assert len(metrics_files) == 1 and all("cell_key" in json.loads(f.read_text()) for f in metrics_files)
    stamps = [f.stat().st_mtime_ns for f in metrics_files]

    # again: every cell is finished, nothing runs, the table is rebuilt the same
    capsys.readouterr()
    assert main(["ablate", "--campaign", str(path), "--out", str(out)]) == 0
    assert "1 finished earlier, 0 to run" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in metrics_files] == stamps
    assert len(client.search_runs([client.get_run(parent_id).info.experiment_id])) == 2  # parent + 1 cell

    # `vidpeft report` rebuilds the table from MLflow alone
    assert main(["report", "e2e-grid", "--tracking-uri", uri, "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "report.csv").read_text() == (out / "report.csv").read_text()
    assert (tmp_path / "again" / "report.md").read_text() == md
