"""From laptop to cluster: `vidpeft submit` builds the `ray job submit` a user would type (a real cluster runs a
submitted job in tests/pipelines/runtime/test_two_nodes_bucket_e2e.py). Also: logged params never carry secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.config import ConfigError
from pipelines.runtime import tracking
from pipelines.cli import main
from pipelines.runtime.submit import SubmitRequest, client_env, job_command, runtime_env, shown

ROOT = Path(__file__).resolve().parents[3]


def submitted_spec(cmd: list[str]) -> dict:
    return json.loads(cmd[cmd.index("--runtime-env-json") + 1])


# ---- the submit command, without a cluster ------------------------------------------------------------

def test_submit_builds_the_ray_job_command(tmp_path):
    environ = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "VIDPEFT_STORAGE_PATH": "s3://bucket/ckpt",
               "HF_TOKEN": "hf_abcdefgh", "UNRELATED": "x"}
    req = SubmitRequest(entrypoint=["--", "vidpeft", "train", "--config", "a b.yaml"], working_dir=str(ROOT),
                        env=["HF_TOKEN", "EXTRA=1"], submission_id="job-1")
    cmd = job_command(req, environ)
    assert cmd[-5:] == ["--", "vidpeft", "train", "--config", "a b.yaml"]  # entrypoint kept word by word
    assert cmd[cmd.index("--address") + 1] == "http://127.0.0.1:8265"  # the local head by default
    assert cmd[cmd.index("--submission-id") + 1] == "job-1"
    spec = submitted_spec(cmd)
    assert spec["working_dir"] == str(ROOT)
    assert ".venv/" in spec["excludes"]  # deploy/runtime_env.yaml of the working dir is the base
    assert spec["env_vars"]["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert spec["env_vars"]["VIDPEFT_STORAGE_PATH"] == "s3://bucket/ckpt"
    assert spec["env_vars"]["EXTRA"] == "1" and spec["env_vars"]["HF_TOKEN"] == "hf_abcdefgh"
    assert "UNRELATED" not in spec["env_vars"]  # only what a run reads, or what was asked for
    text = shown(cmd)  # what is printed: secrets masked
    assert text.startswith("ray job submit") and "hf_abcdefgh" not in text and "'a b.yaml'" in text

    # the address from the environment, in either form `ray` accepts
    assert job_address_of(SubmitRequest(["x"], working_dir=None), {"RAY_ADDRESS": "10.0.0.1:8265"}) == \
        "http://10.0.0.1:8265"
    # no code shipped: nothing about a working dir
    assert "working_dir" not in submitted_spec(job_command(SubmitRequest(["x"], working_dir=None), {}))


def job_address_of(req: SubmitRequest, environ: dict) -> str:
    cmd = job_command(req, environ)
    return cmd[cmd.index("--address") + 1]


def test_submit_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no command"):
        job_command(SubmitRequest(entrypoint=["--"]), {})
    with pytest.raises(ConfigError, match="NOPE"):
        runtime_env(SubmitRequest(["x"], working_dir=str(tmp_path), env=["NOPE"]), {})
    with pytest.raises(ConfigError, match="not a directory"):
        runtime_env(SubmitRequest(["x"], working_dir=str(tmp_path / "missing")), {})
    assert main(["submit", "--working-dir", str(tmp_path), "--dry-run"]) == 2
    assert "no command" in capsys.readouterr().err


def test_submit_turns_on_token_auth_when_a_token_is_at_hand(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token here
    assert "RAY_AUTH_MODE" not in client_env({})
    assert client_env({"RAY_AUTH_TOKEN": "t"})["RAY_AUTH_MODE"] == "token"
    token = tmp_path / "tok"
    token.write_text("t")
    assert client_env({"RAY_AUTH_TOKEN_PATH": str(token)})["RAY_AUTH_MODE"] == "token"
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    assert client_env({})["RAY_AUTH_MODE"] == "token"
    assert client_env({"RAY_AUTH_MODE": "disabled"})["RAY_AUTH_MODE"] == "disabled"  # an explicit choice stays


def test_dry_run_prints_the_command(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert main(["submit", "--dry-run", "--", "vidpeft", "train", "--config", "pipelines/configs/demo.yaml"]) == 0
    out = capsys.readouterr().out
    assert "ray job submit --address" in out and "-- vidpeft train --config pipelines/configs/demo.yaml" in out


# ---- secrets never become MLflow params --------------------------------------------------------------

def test_logged_params_carry_no_secrets(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-very-secret")
    params = {
        "model.backbone.kwargs.hf_token": "hf_live_123456",  # secret-looking key
        "model.backbone.kwargs.api_key": "sk-abcdef",
        "tracking.tracking_uri": "https://alice:pw123456@mlflow.internal:5000",  # password in a URL
        "data.note": "copied hunter2-very-secret by mistake",  # a secret env value, wherever it appears
        "model.attn.key_dim": "64",  # looks like a key, is a number: kept
        "model.backbone.name": "vit_tiny",
    }
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = tracking.start_run(uri, "exp", "run", params)
    logged = MlflowClient(uri).get_run(run_id).data.params
    text = json.dumps(logged)
    for secret in ("hf_live_123456", "sk-abcdef", "pw123456", "hunter2-very-secret"):
        assert secret not in text
    assert logged["tracking.tracking_uri"] == "https://alice:***@mlflow.internal:5000"
    assert logged["model.attn.key_dim"] == "64" and logged["model.backbone.name"] == "vit_tiny"


@pytest.mark.e2e
def test_local_ray_dashboard_listens_on_loopback(ray_session):
    from ray._private.worker import get_dashboard_url

    assert get_dashboard_url().split(":")[0] == "127.0.0.1"
