"""`vidpeft demo` (what `make demo` runs): data generated once, results and MLflow store in the workdir."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main

pytestmark = pytest.mark.e2e


def test_demo_writes_data_results_and_store_in_workdir(ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny = ["--set", "optim.epochs=1", "--set", "data.limit=8"]
    assert main(["demo", "--workdir", str(tmp_path), *tiny]) == 0
    metrics = json.loads((tmp_path / "runs" / "demo" / "metrics.json").read_text())
    assert (tmp_path / "demo_data" / "manifest.parquet").is_file()
    assert metrics["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}" and (tmp_path / "mlflow.db").is_file()
    assert "mlflow ui --backend-store-uri" in capsys.readouterr().out

    # a second `make demo` continues the finished run instead of failing on its checkpoints
    videos = sorted((tmp_path / "demo_data" / "videos").iterdir())
    assert main(["demo", "--workdir", str(tmp_path), *tiny]) == 0
    again = json.loads((tmp_path / "runs" / "demo" / "metrics.json").read_text())
    assert again["run_id"] == metrics["run_id"] and again["epoch"] == metrics["epoch"]
    assert sorted((tmp_path / "demo_data" / "videos").iterdir()) == videos  # data not regenerated
