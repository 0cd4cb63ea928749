"""One run per output dir, a sqlite store created once, MLflow runs never left RUNNING, nothing
rewritten by a refused --resume, credentials in URLs never printed or stored, and checkpoints chosen
by content, not only size. No Ray here: every failure below happens before Ray would start."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.config import resolve
from pipelines.runtime import tracking
from pipelines.cli import main
from pipelines.config import ExperimentConfig
from pipelines.runtime.redaction import redact_urls
from pipelines.run.lock import LOCK_NAME, RunLockedError, hold_run_lock
from pipelines.run.checkpoints import STATE, WEIGHTS, latest_checkpoint
from pipelines.run.train import run_train
from tests.conftest import TINY_VIT

ROOT = Path(__file__).resolve().parents[3]


# ---- the output dir lock -----------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from pipelines.run.lock import hold_run_lock
    with hold_run_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_second_run_on_one_output_dir_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError) as err:
            with hold_run_lock(tmp_path / "run"):
                pass
        assert f"pid {holder.pid}" in str(err.value) and "started 20" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed without releasing: its lock is taken over, and said so
    with hold_run_lock(tmp_path / "run") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # released cleanly


def test_train_refuses_a_locked_output_dir_in_one_line(tmp_path, capsys):
    with hold_run_lock(tmp_path / "run"):
        rc = main(["train", "--set", f"output_dir={tmp_path / 'run'}", "--set", "data.manifest=/nonexistent"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and f"pid {os.getpid()}" in err and str(tmp_path / "run") in err


def test_a_fresh_sqlite_store_survives_runs_starting_together(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ctx = mp.get_context("spawn")
    # the target by reference to its own module: each child imports MLflow and vidpeft's tracking, not this file's
    # imports (torch, the CLI), which made the four starts take minutes on a loaded 2-core machine
    procs = [ctx.Process(target=tracking.start_run, args=(uri, "exp", "race", {"a": "1"})) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("exp").experiment_id])) == 4


# ---- failures after the MLflow run opened ---------------------------------------------------------------

def config(synth_data, tmp_path, *extra):
    return resolve(ExperimentConfig, [], [
        f"model.backbone={TINY_VIT}".replace("'", ""), f"data.manifest={synth_data}",
        f"output_dir={tmp_path / 'run'}", "tracking.tracking_uri=sqlite:///" + str(tmp_path / "mlflow.db"),
        "optim.epochs=1", *extra])


def test_a_failure_before_fit_marks_the_run_failed_and_stores_no_credentials(synth_data, tmp_path, monkeypatch):
    import pipelines.run.train as train

    def ray_down(address=""):  # Ray start-up fails after the MLflow run was opened
        raise ConnectionError("Ray did not start")

    monkeypatch.setattr(train, "ensure_ray", ray_down)
    cfg = config(synth_data, tmp_path, "tracking.tags={note: 'see https://bob:hunter2pass@wiki.local/x'}")
    with pytest.raises(ConnectionError):
        run_train(cfg)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = json.loads((tmp_path / "run" / "run_info.json").read_text())["run_id"]
    assert MlflowClient(uri).get_run(run_id).info.status == "FAILED"
    stored = (tmp_path / "run" / "config.yaml").read_text() + (tmp_path / "run" / "run_info.json").read_text()
    assert "hunter2pass" not in stored and "https://bob:***@wiki.local/x" in stored
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # the lock is released on failure too


def test_a_refused_resume_rewrites_nothing(synth_data, tmp_path):
    """A checkpoint saved for another model: --resume is refused on the driver, config.yaml untouched."""
    from components.checkpoint import save_weights, trainable_state_dict
    from components.config import to_dict
    from pipelines.run.preflight import build_on_meta

    other = config(synth_data, tmp_path, "model.finetune=full", "model.head.num_outputs=4")
    model = build_on_meta(other.model, 4, None).to_empty(device="cpu")
    ckpt = tmp_path / "run" / "ray" / "train-1" / "checkpoint_000"
    ckpt.mkdir(parents=True)
    save_weights(ckpt / WEIGHTS, trainable_state_dict(model), to_dict(other.model))
    (ckpt / STATE).write_text(json.dumps({"epoch": 0, "files": {WEIGHTS: (ckpt / WEIGHTS).stat().st_size}}))
    (tmp_path / "run" / "config.yaml").write_text("the earlier run's config\n")
    rc = main(["train", "--resume", "--set", f"model.backbone={TINY_VIT}".replace("'", ""),
               "--set", f"data.manifest={synth_data}", "--set", f"output_dir={tmp_path / 'run'}"])
    assert rc == 2
    assert (tmp_path / "run" / "config.yaml").read_text() == "the earlier run's config\n"


# ---- credentials in URLs ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,shown", [
    ("https://alice:pw123@mlflow:5000", "https://alice:***@mlflow:5000"),
    ("s3://KEY:SECRET@bucket/p", "s3://KEY:***@bucket/p"),
    ("https://ghp_tokenvalue@github.com/x", "https://***@github.com/x"),
    ("http://host/api?access_token=abc123&page=2", "http://host/api?access_token=***&page=2"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("http://127.0.0.1:8265", "http://127.0.0.1:8265"),
])
def test_url_credentials_are_masked(text, shown):
    assert redact_urls(text) == shown


def test_submit_never_prints_a_password_in_a_tracking_uri(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:pw-in-uri-42@mlflow.internal:5000")
    assert main(["submit", "--dry-run", "--", "vidpeft", "train", "--set",
                 "tracking.tracking_uri=https://bob:pw-in-arg-42@mlflow.internal"]) == 0
    out = capsys.readouterr()
    assert "pw-in-uri-42" not in out.out + out.err and "pw-in-arg-42" not in out.out + out.err
    assert "alice:***@mlflow.internal" in out.out


# ---- checkpoints chosen by content ---------------------------------------------------------------------

def test_a_corrupted_checkpoint_of_the_right_size_is_passed_over(tmp_path):
    from tests.pipelines.run.test_faults import save

    run = tmp_path / "train-1"
    good = save(run / "checkpoint_000", epoch=0)
    newest = save(run / "checkpoint_001", epoch=1, seed=1)
    assert latest_checkpoint(tmp_path) == str(newest)
    data = bytearray((newest / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF  # same size, one byte flipped
    (newest / WEIGHTS).write_bytes(bytes(data))
    assert latest_checkpoint(tmp_path) == str(good)
    shutil.rmtree(good)
    assert latest_checkpoint(tmp_path) is None


# ---- submit without a cluster ----------------------------------------------------------------------

def test_submit_with_no_cluster_listening_is_one_line(capsys):
    """Nothing answers at the dashboard address: one line naming it, not `ray job submit`'s traceback."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["submit", "--address", f"http://127.0.0.1:{port}", "--", "vidpeft", "explain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vidpeft: error: submit: no Ray dashboard answers at http://127.0.0.1:")
    assert not any("Traceback" in line for line in err)


def test_submit_counts_any_http_answer_as_a_cluster():
    """A dashboard that refuses the request (e.g. token authentication) still answers: `ray job` takes over."""
    import http.server
    import threading

    from pipelines.runtime.submit import check_reachable

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501 to every GET
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        check_reachable(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.server_close()
