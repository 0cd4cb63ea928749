"""M2-CLIP end to end: a tiny run validated on 2 clips per video and closed by zero-shot on held-out class
names (metrics in metrics.json and MLflow), then `vidpeft zeroshot` on the same run over names it never saw:
one view with prompt templates, then 2 clips x 3 crops. One training run serves both (each was a test)."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

from components.data.manifest import read_manifest, write_manifest
from pipelines.cli import main
from tests.conftest import DEMO_CONFIG

pytestmark = pytest.mark.e2e

TINY_M2CLIP = [
    "--set", "model.kind=m2clip",
    "--set", "model.backbone={family: openclip_vit, name: vidpeft-tiny-clip, img_size: 32, num_frames: 4}",
    "--set", "model.modalities=[]",
    "--set", "model.adapters=[{type: ted, bottleneck: 8}]",
    "--set", "model.m2clip={text_adapters: [{type: text_adapter, bottleneck: 8}], cmlm_adapter_width: 8}",
    "--set", "optim.epochs=1",
    "--set", "data.limit=16",
]


def test_multi_view_validation_zero_shot_close_and_zero_shot_on_unseen_names(ray_session, synth_data, tmp_path,
                                                                             capsys):
    from mlflow.tracking import MlflowClient

    # a held-out label set: three classes under names the text tower never saw in training
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
    assert "train_loss_contrastive" in metrics and "train_loss_cmlm" in metrics  # the decoder's terms
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

    # the same held-out set through the CLI: one view per video with two prompt templates ...
    classes = tmp_path / "classes.txt"
    classes.write_text("up\nleftwards\ndown\n")
    out = tmp_path / "zs.json"
    assert main(["zeroshot", "--checkpoint", str(run), "--classes", str(classes), "--manifest", str(unseen),
                 "--split", "val", "--template", "a video of {}", "--template", "{} motion",
                 "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["classes"] == 3 and result["clips"] == expected and result["adapters_loaded"] > 0
    assert 0.0 <= result["top1"] <= result["top5"] == 1.0  # top-5 over 3 classes always hits
    # ... and on 2 clips x 3 crops per video
    assert main(["zeroshot", "--checkpoint", str(run), "--classes", str(classes), "--manifest", str(unseen),
                 "--split", "val", "--clips", "2", "--crops", "3", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["views"] == 6 and result["clips"] == expected and result["adapters_loaded"] > 0

    # a classes file that does not match the manifest's label count is refused, naming both
    classes.write_text("up\ndown\n")
    assert main(["zeroshot", "--checkpoint", str(run), "--classes", str(classes), "--manifest", str(unseen)]) == 2
