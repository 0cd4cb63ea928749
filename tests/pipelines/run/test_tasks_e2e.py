"""Each CM3T task type end to end through `vidpeft train`: multi-label (mAP) and regression (MSE).

Single-label runs in test_train_e2e.py. Targets come from the synthetic set: multi-label = the
motion class plus its neighbour class; regression = the clip's speed (the manifest's target).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from components.data.manifest import read_manifest, write_manifest
from pipelines.cli import main
from tests.conftest import DEMO_CONFIG

pytestmark = pytest.mark.e2e

TINY = [
    "--set", "model.backbone.kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "--set", "model.backbone.num_frames=4",
    "--set", "model.modalities=[{name: audio}]",
    "--set", "model.adapters=[{type: mhva, sites: [mlp], heads: 4, bottleneck: 8},"
             " {type: prefix, sites: [attn], prefix_length: 4, hidden: 16},"
             " {type: caa, sites: [block], layers: [-1], modalities: [audio], bottleneck: 8, share_down_with: mhva}]",
    "--set", "optim.epochs=1",
    "--set", "data.limit=24",
]


def multilabel_manifest(src, dst_dir):
    m = read_manifest(src)
    table = m.table
    labels = table["label"].to_pylist()
    multi = [[y, (y + 1) % m.num_classes] for y in labels]
    table = table.append_column("multi_label", pa.array(multi, pa.list_(pa.int64())))
    # paths are absolute after read_manifest, so the copy can live anywhere
    return write_manifest(dst_dir / "multi.parquet", table, m.class_names, m.feature_dims)


# the regression run also decodes with PyAV (decord as its fallback): data.decoder through the CLI
@pytest.mark.parametrize("task, metric, decoder", [("multi_label", "val_mAP", "decord"),
                                                   ("regression", "val_mse", "pyav")])
def test_task_types_through_the_cli(ray_session, synth_data, tmp_path, task, metric, decoder):
    manifest = multilabel_manifest(synth_data, tmp_path) if task == "multi_label" else synth_data
    out = tmp_path / "run"
    argv = ["train", "--config", str(DEMO_CONFIG), *TINY,
            "--set", f"model.head.task={task}",
            "--set", f"data.decoder={decoder}",
            "--set", f"data.decoder_fallback={'decord' if decoder == 'pyav' else 'pyav'}",
            "--set", f"data.manifest={manifest}", "--set", f"output_dir={out}",
            "--set", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metric in metrics and metrics[metric] == metrics[metric]  # present and not NaN
    if task == "multi_label":
        assert 0.0 < metrics["val_mAP"] <= 1.0
    else:
        assert metrics["val_mse"] >= 0.0 and "val_mse_speed" in metrics  # per-target MSE, named
    assert metrics["gflops"] > 0 and 0 < metrics["trainable_pct"] < 100
    assert metrics["fallback_clips_total"] == 0  # every readable synthetic video is read by the first decoder
