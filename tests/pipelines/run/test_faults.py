"""Faults a run survives: a kill in the middle of a checkpoint save, a Train worker killed mid-run (twice),
a driver stopped with Ctrl-C and resumed, and checkpoints on a local dir standing in for shared storage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from pipelines.config import ExperimentConfig
from pipelines.run.checkpoints import STATE, WEIGHTS, latest_checkpoint, restore_checkpoint, save_checkpoint
from pipelines.run.inputs import STORAGE_ENV, storage_location
from pipelines.runtime.stop_signals import stop_like_ctrl_c as _stop_like_ctrl_c

ROOT = Path(__file__).resolve().parents[3]
MODEL_CONFIG = {"tiny": 1}


def tiny_training_state(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def save(directory: Path, epoch: int, seed: int = 0) -> Path:
    """A complete checkpoint in Ray's layout: <storage>/<run>/checkpoint_<n>/."""
    directory.mkdir(parents=True)
    save_checkpoint(directory, *tiny_training_state(seed), {"epoch": epoch, "metrics": {}}, MODEL_CONFIG)
    return directory


def test_latest_checkpoint_picks_newest_complete(tmp_path):
    run = tmp_path / "train-1"
    save(run / "checkpoint_000", epoch=0)
    newest = save(run / "checkpoint_001", epoch=1)
    assert latest_checkpoint(tmp_path) == str(newest)
    assert latest_checkpoint(tmp_path / "missing") is None


@pytest.mark.parametrize("damage", ["no_state", "missing_file", "truncated_file", "torn_state"])
def test_partial_checkpoint_is_never_chosen(tmp_path, damage):
    """Ray copies a checkpoint dir to storage file by file, in any order: a copy cut short is skipped."""
    run = tmp_path / "train-1"
    good = save(run / "checkpoint_000", epoch=0)
    bad = run / "checkpoint_001"
    shutil.copytree(save(tmp_path / "newer", epoch=1, seed=1), bad)
    if damage == "no_state":
        (bad / STATE).unlink()
    elif damage == "missing_file":
        (bad / "optimizer.pt").unlink()
    elif damage == "truncated_file":
        data = (bad / WEIGHTS).read_bytes()
        (bad / WEIGHTS).write_bytes(data[: len(data) // 2])
    else:
        text = (bad / STATE).read_text()
        (bad / STATE).write_text(text[: len(text) // 2])
    assert latest_checkpoint(tmp_path) == str(good)


KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import torch
    from pathlib import Path
    import pipelines.run.checkpoints as tl
    from tests.pipelines.run.test_faults import save, tiny_training_state, MODEL_CONFIG

    storage, point = Path(sys.argv[1]), sys.argv[2]
    save(storage / "train-1" / "checkpoint_000", epoch=0)
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if point == "optimizer":  # half the bytes reach the disk, then the process dies
        def torch_save(obj, path):
            real_save(obj, str(path) + ".full")
            data = Path(str(path) + ".full").read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
            die()
        real_save, torch.save = torch.save, torch_save  # save_checkpoint imports torch when it saves
    elif point == "state":  # everything written, killed just before state.json is renamed into place
        real_replace = os.replace
        def replace(src, dst):
            if str(dst).endswith(tl.STATE):
                die()
            real_replace(src, dst)
        tl.os.replace = replace
    target = storage / "train-1" / "checkpoint_001"
    target.mkdir()
    tl.save_checkpoint(target, *tiny_training_state(1), {"epoch": 1, "metrics": {}}, MODEL_CONFIG)
""")


@pytest.mark.parametrize("point", ["optimizer", "state"])
def test_kill_during_save_leaves_previous_checkpoint_usable(tmp_path, point):
    """A process SIGKILLed in the middle of writing checkpoint 1: checkpoint 0 is chosen, and it loads."""
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path), point], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = tmp_path / "train-1" / "checkpoint_001"
    assert (partial / WEIGHTS).is_file()  # the kill really hit a save in progress
    chosen = latest_checkpoint(tmp_path)
    assert chosen == str(tmp_path / "train-1" / "checkpoint_000")
    model, optimizer, scheduler = tiny_training_state(seed=5)
    state = restore_checkpoint(Path(chosen), model, optimizer, scheduler, MODEL_CONFIG)
    expected, *_ = tiny_training_state(seed=0)
    assert state["epoch"] == 0 and torch.equal(model.weight, expected.weight)
    assert optimizer.state_dict()["state"]  # the optimizer's moments came back too


def test_a_storage_folder_that_vanishes_while_listed_holds_no_checkpoint(tmp_path, monkeypatch):
    """In a bucket a folder is only its objects: a starting run's write check (its probe object, written
    then deleted) makes the run's storage folder exist for a moment. Seen between the existence check and
    the listing, that is "no checkpoint yet", not a FileNotFoundError (a poll of the bucket crashed so)."""
    import pyarrow.fs as pafs

    storage = tmp_path / "shared" / "exp"
    storage.mkdir(parents=True)
    (storage / ".vidpeft-write-check-1").write_bytes(b"ok")
    real = pafs.FileSystem

    class Vanishing:  # the local filesystem, on which the folder goes right after it was seen
        def __init__(self, fs):
            self.fs = fs

        def get_file_info(self, what):
            info = self.fs.get_file_info(what)
            if isinstance(what, str):
                shutil.rmtree(storage)
            return info

    class FileSystem:
        @staticmethod
        def from_uri(uri):
            fs, root = real.from_uri(uri)
            return Vanishing(fs), root

    monkeypatch.setattr(pafs, "FileSystem", FileSystem)
    assert latest_checkpoint(storage) is None


def test_checkpoints_on_uri_storage(tmp_path, monkeypatch):
    """Shared storage given as a URI (here file://, as s3:// or gs:// would be) goes through pyarrow."""
    import ray.train

    cfg = ExperimentConfig(name="exp")
    monkeypatch.setenv(STORAGE_ENV, (tmp_path / "shared").as_uri())
    storage = storage_location(cfg, tmp_path / "out")
    assert storage == (tmp_path / "shared" / "exp").as_uri()  # one folder per run name
    save(tmp_path / "shared" / "exp" / "train-1" / "checkpoint_000", epoch=0)
    newest = latest_checkpoint(storage)
    assert newest == storage + "/train-1/checkpoint_000"
    with ray.train.Checkpoint(newest).as_directory() as d:
        assert json.loads((Path(d) / STATE).read_text())["epoch"] == 0
    # the config's storage_path wins over the environment; relative paths become absolute
    monkeypatch.chdir(tmp_path)
    cfg.scaling.storage_path = "nfs"
    assert storage_location(cfg, tmp_path / "out") == str(tmp_path / "nfs" / "exp")
    monkeypatch.delenv(STORAGE_ENV)
    cfg.scaling.storage_path = ""
    assert storage_location(cfg, tmp_path / "out") == str(tmp_path / "out" / "ray")


def test_sigterm_stops_a_run_like_ctrl_c():
    """`ray job stop` and Kubernetes send SIGTERM: during fit it goes to Ray Train's SIGINT handler."""
    seen = []
    ray_handler = lambda signum, frame: seen.append(signum)  # noqa: E731  (stands in for Ray Train's)
    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with _stop_like_ctrl_c():
            signal.signal(signal.SIGINT, ray_handler)  # fit() installs its handler inside the block
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)
        assert seen == [signal.SIGINT]
        # afterwards neither handler outlives the run
        assert signal.getsignal(signal.SIGINT) is before_int and signal.getsignal(signal.SIGTERM) is before_term
    finally:
        signal.signal(signal.SIGINT, before_int)
        signal.signal(signal.SIGTERM, before_term)


def test_fault_hook_kills_once_at_its_point(tmp_path):
    """The test-only hook: a process reaching the chosen point dies by SIGKILL once; afterwards (the restarted
    worker) it runs through; other points and epochs never die."""
    marker = tmp_path / "killed"
    spec = f"point=before_report,epoch=1,once={marker}"
    code = ("import sys; from pipelines.run.fault_hook import reached; "
            "reached(sys.argv[1], 'before_report', 0); reached(sys.argv[1], 'batch', 1, 1); "
            "reached(sys.argv[1], 'before_report', 1); print('survived')")
    first = subprocess.run([sys.executable, "-c", code, spec], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert first.returncode == -signal.SIGKILL and marker.exists(), first.stderr
    again = subprocess.run([sys.executable, "-c", code, spec], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == "survived", again.stderr


def test_fault_hook_with_two_faults_kills_at_each_in_turn(tmp_path):
    """Two faults joined with ';' (one run killed twice): the first start dies at the first, the restarted worker
    at the second, the next runs through."""
    first, second = tmp_path / "killed1", tmp_path / "killed2"
    spec = f"point=batch,epoch=0,batch=2,once={first};point=before_report,epoch=1,once={second}"
    code = ("import sys; from pipelines.run.fault_hook import reached; "
            "[reached(sys.argv[1], 'batch', 0, b) for b in (1, 2, 3)]; reached(sys.argv[1], 'before_report', 0); "
            "reached(sys.argv[1], 'batch', 1, 2); reached(sys.argv[1], 'before_report', 1); print('survived')")
    died_at = []
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", code, spec], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        died_at.append((proc.returncode, first.exists(), second.exists()))
    assert died_at == [(-signal.SIGKILL, True, False), (-signal.SIGKILL, True, True), (0, True, True)], died_at
    assert first.read_text() == "batch epoch 0 batch 2\n" and second.read_text() == "before_report epoch 1 batch 0\n"


def test_max_failures_auto_restarts_lost_workers_on_a_cluster_only():
    from components.config import ConfigError, resolve
    from pipelines.config import CLUSTER_MAX_FAILURES

    cfg = ExperimentConfig()
    assert cfg.scaling.max_failures == "auto"
    assert cfg.scaling.failures_allowed(on_cluster=True) == CLUSTER_MAX_FAILURES >= 1
    assert cfg.scaling.failures_allowed(on_cluster=False) == 0
    explicit = resolve(ExperimentConfig, [], ["scaling.max_failures=2"])
    assert explicit.scaling.failures_allowed(True) == explicit.scaling.failures_allowed(False) == 2
    with pytest.raises(ConfigError, match="max_failures"):
        resolve(ExperimentConfig, [], ["scaling.max_failures=-2"])


# ---- end to end: real Ray Train runs through the CLI, faults injected from outside -------------------

def vidpeft() -> list[str]:
    script = Path(sys.executable).with_name("vidpeft")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def train_args(manifest, out, uri, storage, epochs, *extra) -> list[str]:
    return ["train", "--config", str(ROOT / "pipelines" / "configs" / "demo.yaml"),
            "--set", f"data.manifest={manifest}", "--set", f"output_dir={out}",
            "--set", f"tracking.tracking_uri={uri}", "--set", f"optim.epochs={epochs}",
            "--set", f"scaling.storage_path={storage}", "--set", "data.limit=16", *extra]


def start_driver(ray_session, args: list[str], log: Path, extra_env: dict | None = None,
                 cwd: Path = ROOT) -> subprocess.Popen:
    """`vidpeft train` in its own process, joining the session's Ray (as a job driver on a cluster does)."""
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address, **(extra_env or {}))
    with log.open("w") as f:
        # Ctrl-C reaches the driver as it reaches a command at a terminal, also when this suite runs as a
        # background job (which starts with SIGINT ignored, and a child would inherit that)
        return subprocess.Popen(vidpeft() + args, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finished(proc: subprocess.Popen, log: Path) -> str:
    """The driver's output once it ended with exit code 0 (killed if it has not after 900 s)."""
    try:
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    return log.read_text()


def wait_for_checkpoint(storage: Path, proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = latest_checkpoint(storage)
        if found:
            return found
        assert proc.poll() is None, f"run ended before its first checkpoint:\n{log.read_text()[-4000:]}"
        time.sleep(0.25)
    proc.kill()
    raise AssertionError(f"no checkpoint after {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.mark.e2e
def test_worker_killed_twice_resumes_from_the_newest_checkpoint_each_time(ray_session, synth_data, tmp_path):
    """The Train worker SIGKILLs itself at two chosen points of one run (pipelines/run/fault_hook.py), so the test
    does not depend on when a kill from outside lands. A checkpoint after every step; 3 steps of 8 clips an epoch.
    1. Right after the mid-epoch checkpoint at step 2 of epoch 1: the restarted worker goes on in that epoch,
       after its first 16 clips.
    2. After epoch 2's metrics and checkpoint were made, before Ray has the checkpoint (the window where a metric
       was once logged twice): the restarted worker goes on from step 2's checkpoint and redoes the last step.
    Every (clip, epoch) is trained once, but for the 8 clips of the step redone; every epoch and every step has one
    MLflow point; the run stays one MLflow run. The store is given as MLflow's docs write it, relative to the
    command's directory: the Train workers, which run in directories of their own, log to the same store (they
    once opened an empty one there and failed)."""
    from mlflow.tracking import MlflowClient

    from pipelines.run.fault_hook import FAULT_ENV

    out, uri, shared = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "shared"
    log, first, second, clips = (tmp_path / name for name in ("train.log", "killed1", "killed2", "clips.log"))
    fault = f"point=batch,epoch=0,batch=2,once={first},clip_log={clips};point=before_report,epoch=1,once={second}"
    args = train_args(synth_data, out, "sqlite:///mlflow.db", shared, 2, "--set", "data.limit=24",
                      "--set", "scaling.max_failures=2", "--set", "checkpoint.every_steps=1",
                      "--set", "log.metrics_steps=1")
    text = finished(start_driver(ray_session, args, log, {FAULT_ENV: fault}, cwd=tmp_path), log)
    assert "training in this process" not in text  # in Ray Train workers
    # each kill happened where chosen, and each restart went on from the checkpoint just before it
    assert first.read_text().startswith("batch epoch 0 batch 2"), first.read_text()
    assert second.read_text().startswith("before_report epoch 1"), second.read_text()
    assert "resumed in epoch 1/2 after 16 of its clips" in text, text[-4000:]
    assert "resumed in epoch 2/2 after 16 of its clips" in text, text[-4000:]
    trained = Counter(tuple(map(int, line.split())) for line in clips.read_text().splitlines())
    assert set(trained) == {(e, r) for e in range(2) for r in range(24)}  # no clip skipped
    assert [trained[0, r] for r in range(24)] == [1] * 24  # killed right after a checkpoint: nothing redone
    assert sorted(trained[1, r] for r in range(24)) == [1] * 16 + [2] * 8  # the last step, after its checkpoint
    final = json.loads((out / "metrics.json").read_text())
    assert final["last_epoch"] == 1  # metrics.json: the best epoch's metrics, trained to the last
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("vidpeft-demo").experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(final["run_id"], "FINISHED")]
    # every epoch logged once: the epoch redone after the kill replaced the lost attempt, no second point
    for key in ("val_top1", "train_loss", "epoch"):
        assert sorted(m.step for m in client.get_metric_history(final["run_id"], key)) == [0, 1], key
    steps = [m.step for m in client.get_metric_history(final["run_id"], "step_train_loss")]
    assert len(steps) == len(set(steps)), steps  # per-step points once each too
    # checkpoints went to the shared storage, one folder per run name
    assert latest_checkpoint(shared / "demo").startswith(str(shared / "demo"))
    assert not (out / "ray").exists()


@pytest.mark.e2e
def test_interrupted_driver_resumes(ray_session, synth_data, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from pipelines.cli import main

    from pipelines.run.fault_hook import FAULT_ENV

    out, uri, shared = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "shared"
    log, marker = tmp_path / "train.log", tmp_path / "held"
    # epochs take a fraction of a second: the run holds before epoch 3's report until Ctrl-C lands
    epochs = 6
    args = train_args(synth_data, out, uri, shared, epochs)
    proc = start_driver(ray_session, args, log, {FAULT_ENV: f"point=before_report,epoch=2,once={marker},action=hold"})
    try:
        deadline = time.monotonic() + 600
        while not marker.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-4000:]
            time.sleep(0.25)
        assert wait_for_checkpoint(shared / "demo", proc, log)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=300) == 130, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "--resume" in log.read_text()  # the way on is in the message
    client = MlflowClient(uri)
    run_id = json.loads((out / "run_info.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"
    interrupted_at = json.loads(
        (Path(latest_checkpoint(shared / "demo")) / STATE).read_text())["epoch"]
    assert interrupted_at < epochs - 1

    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    assert "[vidpeft] resuming from " + str(shared / "demo") in capsys.readouterr().out
    final = json.loads((out / "metrics.json").read_text())
    assert final["last_epoch"] == epochs - 1 and final["run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert {m.step for m in client.get_metric_history(run_id, "val_top1")} == set(range(epochs))
