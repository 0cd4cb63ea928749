"""Two Ray nodes that share no path: a real `ray start --head` and a second `ray start --address=...` with
its own temp dir (token auth on, 127.0.0.1), moto's S3 server holding the manifest, the videos, the
backbone weights and the checkpoints. `vidpeft train` with 2 workers (one per node: each reserves more
than half a node's CPUs) reads everything from the bucket and checkpoints there. The driver is SIGKILLed
once a checkpoint is in the bucket (a preempted or OOM-killed driver: no handler runs); the same command with
`--resume`, sent as a Ray job by `vidpeft submit` (the `ray job submit` a user would type), finishes the run from
the bucket's checkpoint in the same MLflow run. Then `evaluate` and `predict` on the cluster, from the bucket."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from components.io import list_files, read_bytes, write_bytes
from pipelines.run.checkpoints import STATE, progress
from pipelines.runtime.ray_env import free_loopback_port
from tests.pipelines.run.test_faults import wait_for_checkpoint
from tests.pipelines.run.test_object_storage_e2e import backbone_file
from tests.s3_server import moto_s3

pytestmark = [pytest.mark.e2e, pytest.mark.ray_cluster]
ROOT = Path(__file__).resolve().parents[3]
RAY = str(Path(sys.executable).with_name("ray"))
# a user's own Ray settings stay out of the test cluster's processes and its client's
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    return {**env, **extra}


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports outside the kernel's bind(0) range (ray_env.free_loopback_port: the Ray
    instances of the other pytest lane cannot take them before the node binds them)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_loopback_port()
        if port not in ports:
            ports.append(port)
    return ports


def http_status(url: str, token: str | None = None) -> int:
    """The HTTP status of a GET, 0 when nothing answers."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def stop_ray(proc: subprocess.Popen, temp_dir: str, keep_logs: Path | None = None) -> None:
    """A `ray start --block` process, its group and any Ray process using its temp dir; then the dir (its
    session logs copied to ``keep_logs`` first when given: a failed test's evidence)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for pid in [proc.pid, *processes_mentioning(temp_dir)]:  # Ray processes outside the group
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if keep_logs is not None:
        for logs in Path(temp_dir).glob("session_2*/logs"):
            shutil.copytree(logs, keep_logs / logs.parent.name, dirs_exist_ok=True)
    shutil.rmtree(temp_dir, ignore_errors=True)


# what `ray start` prints when its raylet did not register with the GCS within Ray's fixed 30 s (node.py): on a
# 2-core box with the other pytest lane busy, one GCS call took all of it. The node then starts again, as a node
# pool (the cluster launcher, a KubeRay pod) would start it again
REGISTER_TIMEOUT = "timed out during startup"


@contextmanager
def ray_node(args: list[str], env: dict[str, str], log: Path, ready, attempts: int = 1):
    """`ray start --block ARGS --temp-dir=<its own>` until ``ready()``, up to ``attempts`` starts when it exits
    with ``REGISTER_TIMEOUT``; yields the node's temp dir; stopped by its own pids only."""
    # no drain on SIGTERM: stop_ray signals the head's whole process group, its GCS too, and the head would
    # then wait 30 s for a drain through a GCS that is gone. And a node is dead to the GCS after 12 failed health
    # checks in a row, not Ray's 5 (one every 3 s, 10 s to answer): both "nodes" share this 2-core box with the
    # other pytest lane, and a raylet starved of CPU that long is not a lost machine; the test never kills a node
    env = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_health_check_failure_threshold": "12"}
    for attempt in range(1, attempts + 1):
        temp_dir = tempfile.mkdtemp(prefix="vdn", dir="/tmp")  # short: Ray's socket paths live in it
        start = log.stat().st_size if log.exists() else 0
        with log.open("a") as f:  # every attempt's output stays in the one log
            f.write(f"--- ray start, attempt {attempt} of {attempts}\n")
            f.flush()
            proc = subprocess.Popen([RAY, "start", "--block", f"--temp-dir={temp_dir}", "--disable-usage-stats",
                                     *args], env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        failed = True
        try:
            deadline = time.monotonic() + 300
            while not ready():
                if proc.poll() is not None and attempt < attempts and REGISTER_TIMEOUT in log.read_text()[start:]:
                    break  # start again (the finally clause removes this attempt's processes and temp dir)
                why = "exited" if proc.poll() is not None else "not ready after 300 s"
                assert proc.poll() is None and time.monotonic() < deadline, \
                    f"ray start {why}:\n{log.read_text()[-3000:]}"
                time.sleep(1)
            else:
                yield temp_dir
                failed = False
                return
        finally:  # a failure keeps the node's Ray logs beside its start log
            stop_ray(proc, temp_dir, keep_logs=log.with_suffix(".ray_logs") if failed else None)


def alive_nodes(address: str, env: dict[str, str], want: int) -> int:
    """Alive nodes of the cluster once ``want`` are up, from one probe process that connects once and then
    polls (each probe process is a Ray import and a connection); 0 when it cannot tell within 120 s on a
    loaded machine (``ray_node`` then probes again until its deadline)."""
    code = ("import time, ray; ray.init(address=%r, logging_level='ERROR'); deadline = time.monotonic() + 100\n"
            "while sum(n['Alive'] for n in ray.nodes()) < %d and time.monotonic() < deadline: time.sleep(0.5)\n"
            "print(sum(n['Alive'] for n in ray.nodes()))" % (address, want))
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return 0
    lines = proc.stdout.strip().splitlines()
    return int(lines[-1]) if proc.returncode == 0 and lines and lines[-1].isdigit() else 0


def cluster_report(address: str, env: dict[str, str], head_dir: str) -> str:
    """What a stalled run's cluster looked like: its alive nodes, and what the GCS said of nodes and workers."""
    said = [line for log in Path(head_dir).glob("session_latest/logs/gcs_server.out")
            for line in log.read_text(errors="replace").splitlines()
            if re.search(r"dead|unhealthy|health check|failed to", line, re.IGNORECASE)]
    return f"cluster: {alive_nodes(address, env, 2)} of 2 nodes alive; the GCS on nodes:\n" + "\n".join(said[-12:])


def test_two_nodes_train_from_a_bucket_killed_and_resumed_by_a_submitted_job(ray_session, tmp_path):
    """``ray_session``: a second Ray instance on this machine (as a developer's own local Ray would be), where Ray
    Train's placement-group cleaner cannot find its cluster without an address: when it failed, the killed
    driver's placement group outlived it and the resumed run waited for its CPUs until the test timed out."""
    from mlflow.tracking import MlflowClient

    from components.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", num_classes=2, clips_per_class=8, frames=8, size=32, seed=4)
    token = secrets.token_hex(16)
    token_file = tmp_path / "ray_token"
    token_file.write_text(token)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # `vidpeft` on the nodes
    with moto_s3() as s3, ExitStack() as stack:
        s3.upload_tree(data.parent, "synth")
        write_bytes(s3.uri("weights/backbone.safetensors"), backbone_file(tmp_path).read_bytes())
        env = clean_env(PATH=path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), **s3.env)
        gcs, dashboard, client, agent = free_ports(4)
        address, jobs = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}"
        head_dir = stack.enter_context(ray_node(
            ["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
             f"--dashboard-agent-listen-port={agent}", "--num-cpus=2"],
            env, tmp_path / "head.log", attempts=3,  # ready: its node up and its job API answering
            ready=lambda: alive_nodes(address, env, 1) >= 1 and http_status(jobs + "/api/version", token) == 200))
        stack.enter_context(ray_node(
            [f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=2"],
            env, tmp_path / "node2.log", lambda: alive_nodes(address, env, 2) >= 2, attempts=3))
        # MLflow and the checkpoint storage from the environment, as a user sets them: `vidpeft submit` forwards both
        out, uri, storage = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db", s3.uri("ckpt")
        run_env = {"MLFLOW_TRACKING_URI": uri, "VIDPEFT_STORAGE_PATH": storage}
        sets = [f"data.manifest={s3.uri('synth/manifest.parquet')}",
                f"model.backbone.checkpoint={s3.uri('weights/backbone.safetensors')}",
                "scaling.num_workers=2", "scaling.cpus_per_worker=1.5", "data.decode_cpus=0.25",
                f"output_dir={out}",  # the driver's own folder (the job's driver runs on this machine's head)
                "model.backbone.num_frames=4", "model.backbone.kwargs={patch_size: 8, embed_dim: 32, depth: 2, "
                "num_heads: 2}", "optim.warmup_epochs=0", "optim.epochs=2", "data.batch_size=4",
                # 12 train clips, 2 workers of batch 4: 2 steps per epoch, a checkpoint after each
                "checkpoint.every_steps=1",
                f"data.cache_dir={tmp_path / 'node_cache'}"]  # the same local path on each node
        train = ["train", "--config", "pipelines/configs/demo.yaml", *[x for kv in sets for x in ("--set", kv)]]
        driver_env = {**env, **run_env, "RAY_ADDRESS": address, "PYTHONPATH": str(ROOT)}

        # 1) the driver, SIGKILLed (its process group) as soon as a checkpoint of its run is in the bucket. SIGKILL,
        # as a preempted or OOM-killed driver dies: no handler runs (Ctrl-C/SIGTERM, which end the MLflow run as
        # KILLED, is tests/pipelines/run/test_faults.py::test_interrupted_driver_resumes)
        killed_log = tmp_path / "killed.log"
        with killed_log.open("w") as log:
            driver = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *train], cwd=ROOT, env=driver_env,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # a hang guard, not a speed check: on a slower 2-core box with the other pytest lane busy, there was
            # none 3 min in (Train workers placed at 50 s, the data splits at 100 s, the decoder still starting)
            try:
                first = wait_for_checkpoint(f"{storage}/demo", driver, killed_log, timeout=600)
            except AssertionError as e:  # the cluster's state first: the driver's log ends in Ray's retries
                raise AssertionError(f"{cluster_report(address, env, head_dir)}\n{e}") from None
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        assert driver.returncode == -signal.SIGKILL, f"run ended before the kill:\n{killed_log.read_text()[-4000:]}"
        assert "Found multiple active Ray instances" not in killed_log.read_text(), killed_log.read_text()[-4000:]
        run_id = json.loads((out / "run_info.json").read_text())["run_id"]
        tracking = MlflowClient(uri)
        assert tracking.get_run(run_id).info.status == "RUNNING"  # nothing ended it: the kill left no trace

        # 2) the same command with --resume, submitted as a Ray job: the user's side has the token file but no
        # RAY_AUTH_MODE, and MLflow and the storage in its environment; the code ships as the job's working dir
        assert http_status(jobs + "/api/jobs/") == 401  # token auth is on: a request without it is turned away
        job_id = f"vidpeft-e2e-{secrets.token_hex(4)}"
        user_env = clean_env(PATH=path, RAY_AUTH_TOKEN_PATH=str(token_file), **run_env)
        resumed_log = tmp_path / "resumed.log"  # a file, so a hang leaves what the job printed
        with resumed_log.open("w") as log:
            submit = subprocess.run([str(Path(sys.executable).with_name("vidpeft")), "submit", "--address", jobs,
                                     "--submission-id", job_id, "--", "vidpeft", *train, "--resume"],
                                    cwd=ROOT, env=user_env, stdout=log, stderr=subprocess.STDOUT, timeout=900)
        text = resumed_log.read_text()
        assert submit.returncode == 0, text[-4000:]
        req = urllib.request.Request(f"{jobs}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            job = json.loads(r.read())
        assert job["status"] == "SUCCEEDED", job
        assert {k: job["runtime_env"]["env_vars"].get(k) for k in run_env} == run_env  # forwarded by submit
        assert "Found multiple active Ray instances" not in text, text[-4000:]  # every worker knows its cluster
        # the cluster's workers are as quiet as a local instance's: no warning about Ray's own internals
        # (Ray Data's DatasetManager warned about an option Ray Train sets, on every run that joined a cluster)
        assert "DeprecationWarning" not in killed_log.read_text() + text, text[-4000:]
        assert "taking over the lock" in text  # the killed driver's, released by the kernel
        resumed_from = re.search(r"\[vidpeft\] resuming from (\S+)", text)
        assert resumed_from and resumed_from[1].startswith(first.rsplit("/", 1)[0] + "/"), text[-4000:]  # killed fit's
        state = json.loads(read_bytes(f"{resumed_from[1]}/{STATE}"))
        assert progress(state) >= progress(json.loads(read_bytes(f"{first}/{STATE}"))) > (-1, 0)  # past the start
        resumed = r"\[vidpeft\] resumed (in epoch [12]/2 after \d+ of its clips|after epoch 1/2)"  # the workers' line
        assert re.search(resumed, text), text[-4000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["last_epoch"] == 1 and "val_top1" in metrics and metrics["skipped_clips"] == 0
        assert metrics["run_id"] == run_id and metrics["tracking_uri"] == uri
        # the run's weights: the best checkpoint's, read from the bucket
        weights = [f for f in list_files(s3.uri("ckpt/")) if f.endswith("/weights.safetensors")]
        assert (out / "weights.safetensors").read_bytes() in [read_bytes(f) for f in weights]
        runs = tracking.search_runs([e.experiment_id for e in tracking.search_experiments()])
        assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]  # one run, continued
        assert sorted(m.step for m in tracking.get_metric_history(run_id, "val_top1")) == [0, 1]  # each epoch once

        # 3) evaluate (2 workers) and predict on the cluster RAY_ADDRESS names, from the bucket
        vidpeft = [sys.executable, "-m", "pipelines.cli"]
        for args in (["evaluate", str(out), "--split", "val", "--workers", "2", "--no-mlflow"],
                     ["predict", str(out), s3.uri("synth/videos/"), "--out", str(tmp_path / "preds.parquet")]):
            done = subprocess.run(vidpeft + args, cwd=ROOT, env=driver_env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"vidpeft {args[0]}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        result = json.loads((out / "eval_val.json").read_text())
        assert result["clips"] == 4 and result["manifest"] == s3.uri("synth/manifest.parquet")
        preds = pq.read_table(tmp_path / "preds.parquet")
        assert preds.num_rows == 16  # every video object below the prefix
        assert all(p.startswith(s3.uri("synth/videos/")) for p in preds["video_path"].to_pylist())
