"""End to end: an M2-CLIP run validated on 2 clips per video, closed by zero-shot on held-out class
names (metrics in metrics.json and MLflow), then `vidpeft zeroshot --clips --crops` on the same run."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

from components.data.manifest import read_manifest, write_manifest
from pipelines.cli import main
from tests.conftest import DEMO_CONFIG
from tests.pipelines.infer.test_zeroshot_e2e import TINY_M2CLIP

pytestmark = pytest.mark.e2e


def test_multi_view_validation_and_zero_shot_close(ray_session, synth_data, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    m = read_manifest(synth_data)
    table = m.table.filter(pc.less(m.table["label"], 3))
    unseen = write_manifest(tmp_path / "unseen.parquet", table, ["up", "leftwards", "down"], m.feature_dims)
    expected = sum(1 for s in table["split"].to_pylist() if s == "val")

    # a model kind without a text tower cannot close with zero-shot: refused before anything runs
    run, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    base = ["train", "--config", str(DEMO_CONFIG), "--set", f"data.manifest={synth_data}",
            "--set", f"output_dir={run}", "--set", f"tracking.tracking_uri={uri}"]
    assert main([*base, "--set", f"zeroshot.manifest={unseen}"]) == 2
    assert "zeroshot.manifest" in capsys.readouterr().err and not run.exists()

    zeroshot = ["--set", f"zeroshot.manifest={unseen}", "--set", "zeroshot.split=val",
                "--set", "zeroshot.templates=['a video of {}', '{} motion']"]
    assert main([*base, *TINY_M2CLIP, "--set", "data.eval_clips=2", *zeroshot]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    # validation consumed (n, 2, T, S, S, 3) clips: the model only takes 5-D video, so it ran flattened,
    # and top-1 counts videos (16 of them), not views
    assert "val_top1" in metrics and (metrics["val_top1"] * 16) == pytest.approx(round(metrics["val_top1"] * 16))
    assert metrics["zeroshot_clips"] == expected and metrics["zeroshot_views"] == 2
    assert metrics["zeroshot_classes"] == 3
    assert 0.0 <= metrics["zeroshot_top1"] <= metrics["zeroshot_top5"] == 1.0  # top-5 of 3 classes always hits

    mlflow_run = MlflowClient(uri).get_run(metrics["run_id"])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["data.eval_clips"] == "2"
    for key in ("zeroshot_top1", "zeroshot_top5", "zeroshot_clips"):
        assert mlflow_run.data.metrics[key] == pytest.approx(metrics[key])

    # the same held-out set through the CLI, on 2 clips x 3 crops per video
    classes = tmp_path / "classes.txt"
    classes.write_text("up\nleftwards\ndown\n")
    out = tmp_path / "zs.json"
    assert main(["zeroshot", "--checkpoint", str(run), "--classes", str(classes), "--manifest", str(unseen),
                 "--split", "val", "--clips", "2", "--crops", "3", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["views"] == 6 and result["clips"] == expected and result["adapters_loaded"] > 0
