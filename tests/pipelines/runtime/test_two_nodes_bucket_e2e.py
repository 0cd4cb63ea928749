"""Two Ray nodes that share no path: a real `ray start --head` and a second `ray start --address=...` with
its own temp dir (token auth on, 127.0.0.1), moto's S3 server holding the manifest, the videos, the
backbone weights and the checkpoints. `vidpeft train` with 2 workers (one per node: each reserves more
than half a node's CPUs) reads everything from the bucket and checkpoints there."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from components.io import list_files, write_bytes
from tests.conftest import DEMO_CONFIG
from tests.pipelines.run.test_object_storage_e2e import backbone_file
from tests.pipelines.runtime.test_cluster_e2e import clean_env, free_ports, stop_ray
from tests.s3_server import moto_s3

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[3]
RAY = str(Path(sys.executable).with_name("ray"))


@contextmanager
def ray_node(args: list[str], env: dict[str, str], log: Path, ready):
    """`ray start --block ARGS --temp-dir=<its own>` until ``ready()``; stopped by its own pids only."""
    temp_dir = tempfile.mkdtemp(prefix="vdn", dir="/tmp")  # short: Ray's socket paths live in it
    with log.open("w") as f:
        proc = subprocess.Popen([RAY, "start", "--block", f"--temp-dir={temp_dir}", "--disable-usage-stats", *args],
                                env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, f"ray start:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield
    finally:
        stop_ray(proc, temp_dir)


def alive_nodes(address: str, env: dict[str, str]) -> int:
    code = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes()))" % address)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    return int(lines[-1]) if proc.returncode == 0 and lines and lines[-1].isdigit() else 0


def test_two_nodes_train_from_a_bucket(tmp_path):
    from components.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_classes=2, clips_per_class=8, frames=8, size=32, seed=4)
    token_file = tmp_path / "ray_token"
    token_file.write_text(secrets.token_hex(16))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with moto_s3() as s3, ExitStack() as stack:
        s3.upload_tree(data.parent, "synth")
        write_bytes(s3.uri("weights/backbone.safetensors"), backbone_file(tmp_path).read_bytes())
        env = clean_env(PATH=path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), **s3.env)
        gcs, dashboard, client, agent = free_ports(4)
        address = f"127.0.0.1:{gcs}"
        stack.enter_context(ray_node(
            ["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
             f"--dashboard-agent-listen-port={agent}", "--num-cpus=2"],
            env, tmp_path / "head.log", lambda: alive_nodes(address, env) >= 1))
        stack.enter_context(ray_node(
            [f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=2"],
            env, tmp_path / "node2.log", lambda: alive_nodes(address, env) >= 2))
        out = tmp_path / "run"  # the driver's own folder: no node reads it
        sets = [f"data.manifest={s3.uri('synth/manifest.parquet')}",
                f"model.backbone.checkpoint={s3.uri('weights/backbone.safetensors')}",
                f"scaling.storage_path={s3.uri('ckpt')}", f"scaling.ray_address={address}",
                "scaling.num_workers=2", "scaling.cpus_per_worker=1.5", "data.decode_cpus=0.25",
                f"output_dir={out}", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                "model.backbone.num_frames=4", "model.backbone.kwargs={patch_size: 8, embed_dim: 32, depth: 2, "
                "num_heads: 2}", "optim.warmup_epochs=0", "optim.epochs=1", "data.batch_size=4",
                f"data.cache_dir={tmp_path / 'node_cache'}"]  # the same local path on each node
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", "--config", str(DEMO_CONFIG),
                               *[x for kv in sets for x in ("--set", kv)]],
                              cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["last_epoch"] == 0 and "val_top1" in metrics and metrics["skipped_clips"] == 0
        assert [f for f in list_files(s3.uri("ckpt/")) if f.endswith("/weights.safetensors")]
