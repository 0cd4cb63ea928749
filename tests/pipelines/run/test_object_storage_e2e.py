"""A run with everything in object storage: a real S3-compatible server (moto) on 127.0.0.1 holds the
manifest, the videos, the side features (manifest columns), the backbone weights and Ray Train's
checkpoints; `vidpeft train`, `evaluate`, `predict` and `pack` run as a user runs them (the CLI in
its own process, AWS_ENDPOINT_URL and credentials in the environment, each attached to one warm local Ray
that `vidpeft ray up` started), with no local copy of the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from components.io import delete, list_files, write_bytes
from tests.conftest import DEMO_CONFIG, TINY_VIT
from tests.s3_server import moto_s3

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[3]


def vidpeft(env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, f"vidpeft {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def backbone_file(tmp_path: Path) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(3)
    kw = TINY_VIT["kwargs"]
    vit = timm.create_model(TINY_VIT["name"], pretrained=False, num_classes=0, img_size=TINY_VIT["img_size"], **kw)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    return path


def test_train_evaluate_predict_from_a_bucket(tmp_path):
    from components.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_classes=2, clips_per_class=6, frames=8, size=32, seed=2)
    weights = backbone_file(tmp_path)
    with moto_s3() as s3:
        s3.upload_tree(data.parent, "synth")
        write_bytes(s3.uri("weights/backbone.safetensors"), weights.read_bytes())
        # a train video that is listed in the manifest but gone from the bucket: skipped and counted
        train_ids = [c for c, s in zip(*[pq.read_table(data).column(k).to_pylist() for k in ("clip_id", "split")])
                     if s == "train"]
        delete(s3.uri(f"synth/videos/{train_ids[0]}.mp4"))
        # one warm local Ray for the six commands, started with the bucket's credentials in its environment as a
        # user's shell has them (`vidpeft ray up`; its workers, the decoders, inherit them); this test's own state
        env = {**{k: v for k, v in os.environ.items() if k not in ("VIDPEFT_NO_WARM_RAY", "RAY_ADDRESS",
                                                                   "VIDPEFT_LOOPBACK_GCS")},
               **s3.env, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
        vidpeft(env, "ray", "up")
        try:
            _train_evaluate_predict(env, s3, data, tmp_path, train_ids)
        finally:
            vidpeft(env, "ray", "down")


def _train_evaluate_predict(env: dict, s3, data: Path, tmp_path: Path, train_ids: list[str]) -> None:
    out, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    sets = [f"data.manifest={s3.uri('synth/manifest.parquet')}", "data.check_files=false",
            f"model.backbone.checkpoint={s3.uri('weights/backbone.safetensors')}",
            f"scaling.storage_path={s3.uri('ckpt')}", f"output_dir={out}", f"tracking.tracking_uri={uri}",
            "model.backbone.num_frames=4", "model.backbone.kwargs={patch_size: 8, embed_dim: 32, depth: 2, "
            "num_heads: 2}", "optim.warmup_epochs=0", "data.batch_size=4",
            f"data.cache_dir={tmp_path / 'node_cache'}"]
    args = ["train", "--config", str(DEMO_CONFIG)] + [x for kv in sets for x in ("--set", kv)]
    assert "using the warm local Ray" in vidpeft(env, *args, "--set", "optim.epochs=1").stdout
    first = json.loads((out / "metrics.json").read_text())
    assert first["skipped_clips"] == 1 and first["last_epoch"] == 0  # the vanished video, like a corrupt file
    states = [f for f in list_files(s3.uri("ckpt/")) if f.endswith("/state.json")]
    assert states, "no checkpoint reached the bucket"

    vidpeft(env, "evaluate", str(out), "--manifest", s3.uri("synth/manifest.parquet"), "--split", "val",
            "--no-mlflow")
    result = json.loads((out / "eval_val.json").read_text())
    assert result["clips"] == 4 and result["manifest"] == s3.uri("synth/manifest.parquet")
    assert 0.0 <= result["metrics"]["top1"] <= 1.0
    assert any((tmp_path / "node_cache").rglob("*")), "the decoders' node cache stayed empty"

    # the same clips packed into tar shards in the bucket: the same evaluation, a GET per shard
    gone = f"videos/{train_ids[0]}.mp4"  # pack needs every video: the vanished one is back
    write_bytes(s3.uri(f"synth/{gone}"), (data.parent / gone).read_bytes())
    vidpeft(env, "pack", s3.uri("synth/manifest.parquet"), "--out", s3.uri("packed"), "--shard-size", "40KB")
    vidpeft(env, "evaluate", str(out), "--manifest", s3.uri("packed/manifest.parquet"), "--split", "val",
            "--no-mlflow")
    packed = json.loads((out / "eval_val.json").read_text())
    assert packed["clips"] == 4 and packed["metrics"]["top1"] == result["metrics"]["top1"]
    assert packed["metrics"] == pytest.approx(result["metrics"], rel=1e-4)  # batches may group differently

    preds = tmp_path / "preds.parquet"
    vidpeft(env, "predict", str(out), s3.uri("synth/videos/"), "--out", str(preds))
    table = pq.read_table(preds)
    assert table.num_rows == 12  # every video object below the prefix
    assert all(p.startswith(s3.uri("synth/videos/")) for p in table["video_path"].to_pylist())
