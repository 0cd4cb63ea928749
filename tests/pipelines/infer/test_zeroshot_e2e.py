"""M2-CLIP end to end: train a tiny run, then zero-shot over class names it never saw."""

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


def test_train_then_zero_shot_on_unseen_names(ray_session, synth_data, tmp_path):
    run = tmp_path / "run"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = ["train", "--config", str(DEMO_CONFIG), *TINY_M2CLIP, "--set", f"data.manifest={synth_data}",
            "--set", f"output_dir={run}", "--set", f"tracking.tracking_uri={uri}"]
    assert main(argv) == 0
    trained = json.loads((run / "metrics.json").read_text())
    assert "train_loss_contrastive" in trained and "train_loss_cmlm" in trained  # the decoder's terms

    # a held-out label set: three classes under names the text tower never saw in training
    m = read_manifest(synth_data)
    table = m.table.filter(pc.less(m.table["label"], 3))
    unseen = write_manifest(tmp_path / "unseen.parquet", table, ["up", "leftwards", "down"], m.feature_dims)
    classes = tmp_path / "classes.txt"
    classes.write_text("up\nleftwards\ndown\n")
    out = tmp_path / "zs.json"
    assert main(["zeroshot", "--checkpoint", str(run), "--classes", str(classes), "--manifest", str(unseen),
                 "--split", "val", "--template", "a video of {}", "--template", "{} motion",
                 "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    expected = sum(1 for s in table["split"].to_pylist() if s == "val")
    assert result["classes"] == 3 and result["clips"] == expected and result["adapters_loaded"] > 0
    assert 0.0 <= result["top1"] <= result["top5"] == 1.0  # top-5 over 3 classes always hits

    # a classes file that does not match the manifest's label count is refused, naming both
    classes.write_text("up\ndown\n")
    assert main(["zeroshot", "--checkpoint", str(run), "--classes", str(classes), "--manifest", str(unseen)]) == 2
