"""`vidpeft demo` (what `make demo` runs), at a smaller size: the staged recipe end to end.

The frozen, pretrained backbone must learn the target task through its adapters from the frames
(above the linear probe), every artefact lands in the workdir, and a rerun skips finished stages.
"""

from __future__ import annotations

import json

import pytest

from pipelines.demo.cm3t import DemoSize, run_demo

pytestmark = pytest.mark.e2e

SMALL = DemoSize(source_clips_per_class=30, target_clips_per_class=24, target_classes=4)


def test_demo_adapters_learn_from_frames_and_stages_are_cached(ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    summary = run_demo(str(tmp_path), ["optim.epochs=4"], size=SMALL)
    out = capsys.readouterr().out

    on_disk = json.loads((tmp_path / "demo_summary.json").read_text())
    assert on_disk["runs"].keys() == {"linear_probe", "adapters_frames", "adapters_side"}
    assert on_disk["chance"] == pytest.approx(0.25)
    runs = {k: v["val_top1"] for k, v in on_disk["runs"].items()}
    # the adapters learn the motion from the frames; the head alone on frozen features cannot
    assert runs["adapters_frames"] >= runs["linear_probe"] + 0.15, runs
    assert runs["adapters_frames"] >= 2 * on_disk["chance"], runs
    assert runs["adapters_side"] >= runs["linear_probe"] + 0.15, runs

    # the pretrained backbone is a file in timm's own layout, loaded by the three target runs
    backbone = tmp_path / "runs" / "demo" / "backbone.safetensors"
    assert backbone.is_file()
    for name in on_disk["runs"]:
        cfg = (tmp_path / "runs" / "demo" / name / "config.yaml").read_text()
        assert f"checkpoint: {backbone}" in cfg
    assert (tmp_path / "demo_curves.png").stat().st_size > 0
    assert (tmp_path / "mlflow.db").is_file()
    assert "vidpeft predict" in out and "mlflow ui --backend-store-uri" in out

    # a rerun skips the finished stages: same MLflow runs, data not regenerated
    videos = sorted((tmp_path / "demo_data" / "target" / "videos").iterdir())
    again = run_demo(str(tmp_path), ["optim.epochs=4"], size=SMALL)
    assert {k: v["run_id"] for k, v in again["runs"].items()} == {k: v["run_id"] for k, v in summary["runs"].items()}
    assert sorted((tmp_path / "demo_data" / "target" / "videos").iterdir()) == videos
    assert "finished earlier" in capsys.readouterr().out
