"""`vidpeft ray up`: one warm local Ray that later commands attach to (and say so), on loopback only,
stopped by `vidpeft ray down`; a stale state file is ignored."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import psutil
import pytest

from pipelines.runtime.phase_log import PHASE_LOG_ENV, read_marks

pytestmark = pytest.mark.e2e


def loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    return a.is_loopback or bool(getattr(a, "ipv4_mapped", None) and a.ipv4_mapped.is_loopback)


def vidpeft(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_runs_attach_to_the_warm_ray_and_it_stops(synth_data, tmp_path):
    env = {k: v for k, v in os.environ.items()  # as a fresh shell: no address, no verbosity left by other tests
           if k not in ("VIDPEFT_NO_WARM_RAY", "RAY_ADDRESS", "VIDPEFT_LOG_LEVEL", "VIDPEFT_LOOPBACK_GCS")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # this test's own state file
    state = tmp_path / "cache" / "vidpeft" / "warm-ray.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"address": "127.0.0.1:1", "pid": 2 ** 22 + 7, "cpus": 2}))  # stale
    assert vidpeft(["ray", "status"], env).returncode == 1  # stale: nothing is up
    up = vidpeft(["ray", "up"], env)
    try:
        assert up.returncode == 0, up.stderr
        warm = json.loads(state.read_text())
        assert warm["address"].startswith("127.0.0.1:") and f"pid {warm['pid']}" in up.stdout
        # every server of the warm instance listens on loopback only
        pids = {warm["pid"]} | {c.pid for c in psutil.Process(warm["pid"]).children(recursive=True)}
        listening = [c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN
                     and c.pid in pids]
        assert listening and all(loopback(ip) for ip in listening), listening
        marks = tmp_path / "marks.tsv"
        run = vidpeft(["train", "--config", "demo", "--set", f"data.manifest={synth_data}",
                       "--set", f"output_dir={tmp_path / 'run'}", "--set", "optim.epochs=1",
                       "--set", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db"],
                      {**env, PHASE_LOG_ENV: str(marks)}, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"using the warm local Ray at {warm['address']}" in run.stdout
        # attached before the imports and the config's checks (ray_env.attach_early): its workers start meanwhile
        order = [name for name, _, _ in read_marks(marks) if name in ("ray_ready", "config_loaded")]
        assert order[:2] == ["ray_ready", "config_loaded"], order
        assert psutil.pid_exists(warm["pid"])  # the run ended; the instance stays for the next one
        assert "already up" in vidpeft(["ray", "up"], env).stdout
    finally:
        down = vidpeft(["ray", "down"], env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not state.exists() and vidpeft(["ray", "status"], env).returncode == 1
