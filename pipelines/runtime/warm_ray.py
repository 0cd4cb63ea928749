"""One warm local Ray for many runs: `vidpeft ray up` keeps a loopback-only instance alive in the
background, and every later `vidpeft` command on this machine attaches to it instead of starting its own.

The instance is started by a small vidpeft process (``serve``) exactly as a run starts its own
(``ray_env.ensure_ray``: every server on 127.0.0.1, token authentication on), so attaching to it keeps
those properties; ``ray start --head`` would listen on the machine's external interface. The process
writes its GCS address and pid to ``warm-ray.json`` in the user's cache folder and removes it on exit;
a file whose process is gone, or whose GCS does not answer, is ignored.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidpeft" / "warm-ray.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def find() -> dict | None:
    """The warm instance ({"address", "pid", "cpus", "started"}) when one is up and answers, else None."""
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None
    if _alive(int(state.get("pid", -1))) and _answers(state.get("address", "")):
        return state
    return None


def attach_env() -> dict | None:
    """When a warm instance is up (and no other address is asked for): the environment that joins it
    (its address, token authentication with its token), set now. Ray reads its authentication mode when
    it is imported, so the CLI calls this before anything imports Ray. Returns the instance, or None."""
    if os.environ.get("RAY_ADDRESS") or os.environ.get("VIDPEFT_NO_WARM_RAY"):
        return None
    warm = find()
    if warm:
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=warm["token_path"])
        os.environ.pop("RAY_AUTH_TOKEN", None)
    return warm


def serve(cpus: int, start) -> int:
    """Start the local instance with ``start(num_cpus=...)`` (``ray_env.ensure_ray``, passed in by the
    CLI) and keep it until SIGTERM/SIGINT (runs in the background process)."""

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    # its own token (Ray's token authentication), readable by this user only: every process that
    # attaches reads it from the state file's token_path
    token = STATE.with_name("warm-ray.token")
    STATE.parent.mkdir(parents=True, exist_ok=True)
    token.touch(mode=0o600)
    token.write_text(os.urandom(32).hex())
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    os.environ.pop("RAY_AUTH_TOKEN", None)
    import ray  # after the environment: Ray reads its authentication mode when it is imported

    start(num_cpus=cpus)
    from pipelines.runtime.ray_env import inherited_worker_env
    from pipelines.runtime.ray_compat import start_data_services

    start_data_services()  # the first run that attaches does not wait for Ray Data's per-instance actors
    state = {"address": ray.get_runtime_context().gcs_address, "pid": os.getpid(),
             "cpus": int(ray.cluster_resources().get("CPU", 0)), "started": time.time(),
             "token_path": str(token), "worker_env": inherited_worker_env()}
    STATE.parent.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, STATE)
    try:
        while not stop:
            time.sleep(0.5)
    finally:
        try:
            if json.loads(STATE.read_text()).get("pid") == os.getpid():
                STATE.unlink()
        except (OSError, ValueError):
            pass
        ray.shutdown()
    return 0


def up(cpus: int = 0, timeout: float = 120.0) -> dict:
    """Start the background process (or return the running instance) and wait until it answers."""
    running = find()
    if running:
        return {**running, "already": True}
    STATE.parent.mkdir(parents=True, exist_ok=True)
    log = STATE.with_name("warm-ray.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ray", "serve", "--cpus", str(cpus)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = find()
        if state and state["pid"] == proc.pid:
            return state
        if proc.poll() is not None:
            raise RuntimeError(f"the warm Ray process ended (exit code {proc.returncode}); its log: {log}")
        time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"the warm Ray did not answer within {timeout:.0f} s; its log: {log}")


def down(timeout: float = 60.0) -> dict | None:
    """Stop the warm instance; the state it had, or None when none was up."""
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None
    pid = int(state.get("pid", -1))
    if not _alive(pid):
        STATE.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.3)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    STATE.unlink(missing_ok=True)
    return state
