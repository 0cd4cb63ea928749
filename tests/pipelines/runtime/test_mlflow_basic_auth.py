"""A tracking URI with a password (`http://user:PASSWORD@host:port`) against a real `mlflow server` with
basic auth: the run logs there, and the password never reaches the console. MLflow itself prints
"View run ... at: <URI with the password>" when a run on a server ends (the contrast below shows it does);
vidpeft turns those lines off for such a URI and prints the run's address without the credentials."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.pipelines.runtime.test_mlflow_server import served_mlflow

ROOT = Path(__file__).resolve().parents[3]
USER, PASSWORD = "admin", "Vidpeft-SECRET-7f3a9c"  # the basic-auth app's first admin (MLFLOW_AUTH_ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """host:port of a real `mlflow server --app-name basic-auth` (its users' db in its own folder)."""
    env = {"MLFLOW_FLASK_SERVER_SECRET_KEY": "vidpeft-test-only", "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD}
    with served_mlflow(tmp_path_factory.mktemp("mlflow_auth"), ("--app-name", "basic-auth"), env) as uri:
        yield uri.removeprefix("http://")


def test_the_server_refuses_without_the_password(auth_server):
    from mlflow.tracking import MlflowClient

    with pytest.raises(Exception, match="401|nauthori|credentials"):
        MlflowClient(f"http://{auth_server}").search_experiments()


def test_mlflow_itself_prints_the_password_when_a_run_ends(auth_server, capfd, monkeypatch):
    """The contrast: MLflow's own end-of-run lines carry the URI as given, password and all."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    c = MlflowClient(f"http://{USER}:{PASSWORD}@{auth_server}")
    exp = c.get_experiment_by_name("contrast") or c.get_experiment(c.create_experiment("contrast"))
    run = c.create_run(exp.experiment_id)
    c.set_terminated(run.info.run_id)
    assert PASSWORD in capfd.readouterr().out


@pytest.mark.e2e
def test_a_run_with_a_password_in_its_tracking_uri_never_prints_it(ray_session, synth_data, tmp_path, auth_server):
    from mlflow.tracking import MlflowClient

    from tests.pipelines.run.test_faults import train_args, vidpeft

    uri = f"http://{USER}:{PASSWORD}@{auth_server}"
    out = tmp_path / "run"
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    env.pop("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", None)
    proc = subprocess.run(vidpeft() + train_args(synth_data, out, uri, tmp_path / "shared", 1), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert PASSWORD not in text, [ln for ln in text.splitlines() if PASSWORD in ln]
    run_id = json.loads((out / "run_info.json").read_text())["run_id"]
    assert f"[vidpeft] MLflow run: http://{auth_server}/#/experiments/" in text and run_id in text
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"  # it did log there, with the password
