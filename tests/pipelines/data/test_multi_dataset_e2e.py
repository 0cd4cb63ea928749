"""Three datasets and three tasks in one `vidpeft train` run, through the CLI with the multi-dataset preset:
per-dataset validation metrics reach metrics.json, MLflow and the final table; skipped clips are
counted per dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from components.data.manifest import read_manifest, write_manifest
from components.data.synth import make_synthetic_dataset
from pipelines.cli import main

pytestmark = pytest.mark.e2e

PRESET = Path(__file__).parents[3] / "pipelines" / "configs" / "multi_dataset_demo.yaml"
TINY = [
    "--set", "model.backbone.kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "--set", "model.backbone.num_frames=4",
    "--set", "optim.epochs=1",
]


def test_three_tasks_in_one_run(ray_session, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    motion = make_synthetic_dataset(tmp_path / "motion", num_classes=4, clips_per_class=4, frames=8, size=32,
                                    seed=0, corrupt=1)
    speed = make_synthetic_dataset(tmp_path / "speed", num_classes=3, clips_per_class=4, frames=8, size=32, seed=1)
    m = read_manifest(speed)  # the same clips as a multi-label set: the direction and its neighbour
    multi = [[y, (y + 1) % m.num_classes] for y in m.table["label"].to_pylist()]
    tags = write_manifest(tmp_path / "tags.parquet",
                          m.table.append_column("multi_label", pa.array(multi, pa.list_(pa.int64()))),
                          m.class_names, m.feature_dims)
    datasets = (f"[{{name: motion, manifest: {motion}, task: single_label, weight: 2.0}},"
                f" {{name: speed, manifest: {speed}, task: regression}},"
                f" {{name: tags, manifest: {tags}, task: multi_label}}]")
    out, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    argv = ["train", "--config", str(PRESET), *TINY, "--set", f"data.datasets={datasets}",
            "--set", f"output_dir={out}", "--set", f"tracking.tracking_uri={uri}"]
    assert main(argv) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["val_motion_top1"] <= 1 and 0 <= metrics["train_motion_top1"] <= 1
    assert metrics["val_speed_mse"] >= 0 and "val_speed_mse_speed" in metrics  # target named from its manifest
    assert 0 < metrics["val_tags_mAP"] <= 1
    assert metrics["skipped_clips_motion"] >= 1 and metrics["skipped_clips_speed"] == metrics["skipped_clips_tags"] == 0
    assert "val_top1" not in metrics  # no metric pooled across datasets of different tasks
    client = MlflowClient(uri)
    assert len(client.get_metric_history(metrics["run_id"], "val_tags_mAP")) == 1
    table = capsys.readouterr().out
    assert "val_motion_top1" in table and "val_speed_mse" in table and "val_tags_mAP" in table
    # the resolved config says which head is which, and the weights hold every head
    saved = (out / "config.yaml").read_text()
    assert "kind: multi_dataset" in saved and "name: tags" in saved
