"""A local instance vidpeft starts gives its workers their environment through the raylet's, not through a
runtime env (with one, Ray starts every worker process through its setup_worker script: a second Python
start per worker). Its workers name their own instance in RAY_ADDRESS (Ray Train's placement-group cleaner
needs it when a second Ray runs on the machine), and a process that joins it needs no runtime env either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.e2e

# what a worker process sees of its environment, in this process's workers and in the probe's
KEYS = ("RAY_ADDRESS", "TORCH_CPP_LOG_LEVEL", "PYTHONWARNINGS", "RAY_DATA_LOGGING_CONFIG")
PROBE = """
import json, os, ray
from pipelines.runtime.ray_env import ensure_ray
ensure_ray()

@ray.remote(num_cpus=0)
def env():
    return {k: os.environ.get(k) for k in %r}

print(json.dumps({"job_runtime_env": dict(ray.get_runtime_context().runtime_env), "worker": ray.get(env.remote()),
                  "gcs": ray.get_runtime_context().gcs_address}))
""" % (KEYS,)


def worker_env(ray_session) -> dict:
    @ray_session.remote(num_cpus=0)
    def env():
        return {k: os.environ.get(k) for k in KEYS}

    return ray_session.get(env.remote())


def test_the_instance_workers_inherit_their_environment_and_name_their_instance(ray_session):
    gcs = ray_session.get_runtime_context().gcs_address
    assert dict(ray_session.get_runtime_context().runtime_env) == {}  # no setup_worker start per worker
    env = worker_env(ray_session)
    assert env["RAY_ADDRESS"] == gcs
    assert env["TORCH_CPP_LOG_LEVEL"] == "ERROR" and env["PYTHONWARNINGS"] == "ignore::DeprecationWarning"
    # the driver's own environment is as it was: a command it starts does not join by RAY_ADDRESS by accident
    assert os.environ.get("RAY_ADDRESS") != gcs and "RAY_GCS_SERVER_PORT" not in os.environ


def test_a_process_joining_the_instance_passes_no_runtime_env(ray_session):
    gcs = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": gcs, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["gcs"] == gcs
    assert seen["job_runtime_env"] == {}
    assert seen["worker"]["RAY_ADDRESS"] == gcs and seen["worker"]["TORCH_CPP_LOG_LEVEL"] == "ERROR"


def test_a_verbose_process_joining_a_quiet_instance_gets_loud_workers(ray_session):
    """--verbose shows what a quiet instance's workers would hide (Python's DeprecationWarnings, torch's C++
    warnings, Ray Data's console lines): its job's workers undo the environment they inherit."""
    from pipelines.runtime.ray_env import LOG_LEVEL_ENV

    gcs = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": gcs, "PYTHONPATH": str(ROOT), LOG_LEVEL_ENV: "verbose"}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["worker"]["PYTHONWARNINGS"] == "" and seen["worker"]["TORCH_CPP_LOG_LEVEL"] == "WARNING"
    import yaml

    console = yaml.safe_load(Path(seen["worker"]["RAY_DATA_LOGGING_CONFIG"]).read_text())["handlers"]["console"]
    assert console.get("level") != "ERROR"
    assert seen["worker"]["RAY_ADDRESS"] == gcs  # still named (the setup hook)
