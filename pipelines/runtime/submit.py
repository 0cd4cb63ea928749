"""`vidpeft submit -- vidpeft train ...`: run a vidpeft command as a Ray job on a cluster.

A thin wrapper around `ray job submit` that makes a command run on the cluster as it does on the
laptop: it ships the working directory (the project checkout, minus what deploy/runtime_env.yaml
excludes), forwards the environment a run reads (MLflow tracking URI, checkpoint storage path) and
turns on Ray's token authentication when a token is at hand.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from components.config import ConfigError
from pipelines.runtime.redaction import redact_urls
from pipelines.runtime.redaction import looks_secret
from pipelines.runtime.tracking import REDACTED

# What a run reads from its environment (pipelines/runtime/tracking.py, pipelines/run/train.py): forwarded when set.
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "VIDPEFT_STORAGE_PATH")
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
RUNTIME_ENV_FILE = Path("deploy") / "runtime_env.yaml"


@dataclass
class SubmitRequest:
    entrypoint: list[str]
    address: str = ""  # empty = RAY_API_SERVER_ADDRESS / RAY_ADDRESS / DEFAULT_ADDRESS
    working_dir: str | None = "."  # None = ship no code (it is in the cluster's image)
    runtime_env_file: str = ""  # empty = <working_dir>/deploy/runtime_env.yaml when it exists
    env: list[str] = field(default_factory=list)  # extra NAME or NAME=VALUE to set in the job
    submission_id: str = ""
    no_wait: bool = False


def job_address(address: str, environ: dict[str, str]) -> str:
    """The dashboard's HTTP address: explicit, else the variables `ray job` reads, else the local head."""
    address = address or environ.get("RAY_API_SERVER_ADDRESS") or environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if "://" not in address:  # host:port of a dashboard, e.g. 127.0.0.1:8265
        address = "http://" + address
    return address


def runtime_env(req: SubmitRequest, environ: dict[str, str]) -> dict:
    """deploy/runtime_env.yaml + working_dir + the forwarded and requested environment variables."""
    working_dir = Path(req.working_dir).absolute() if req.working_dir is not None else None
    if working_dir is not None and not working_dir.is_dir():
        raise ConfigError(f"submit: working dir {working_dir} is not a directory")
    env_file = Path(req.runtime_env_file) if req.runtime_env_file else None
    if env_file is None and working_dir is not None and (working_dir / RUNTIME_ENV_FILE).is_file():
        env_file = working_dir / RUNTIME_ENV_FILE
    spec: dict = {}
    if env_file is not None:
        if not env_file.is_file():
            raise FileNotFoundError(f"runtime env file not found: {env_file}")
        spec = yaml.safe_load(env_file.read_text()) or {}
        if not isinstance(spec, dict):
            raise ConfigError(f"{env_file}: a runtime_env must be a mapping, got {type(spec).__name__}")
    if working_dir is not None:
        spec["working_dir"] = str(working_dir)
        spec["excludes"] = list(spec.get("excludes") or []) + _local_outputs_inside(working_dir, environ, spec)
    else:
        spec.pop("working_dir", None)
    env_vars = dict(spec.get("env_vars") or {})
    for name in FORWARDED_ENV:
        if environ.get(name):
            env_vars[name] = environ[name]
    for item in req.env:
        name, sep, value = item.partition("=")
        if not sep:
            if name not in environ:
                raise ConfigError(f"submit: --env {name}: no such variable in this environment (or give {name}=VALUE)")
            value = environ[name]
        env_vars[name] = value
    if env_vars:
        spec["env_vars"] = {k: str(v) for k, v in env_vars.items()}
    return spec


def _local_outputs_inside(working_dir: Path, environ: dict[str, str], spec: dict) -> list[str]:
    """Checkpoint storage (VIDPEFT_STORAGE_PATH) or a local MLflow store inside the working dir: never shipped
    with the code (each job would upload every earlier job's optimizer states)."""
    out = []
    for value in (environ.get("VIDPEFT_STORAGE_PATH", ""), environ.get("MLFLOW_TRACKING_URI", "")):
        path = value.removeprefix("sqlite:///").removeprefix("file://")
        if not path or "://" in path or not os.path.isabs(path):
            continue
        try:
            rel = Path(path).absolute().relative_to(working_dir)
        except ValueError:
            continue
        entry = f"{rel.as_posix()}/" if not path.endswith(".db") else rel.as_posix()
        if rel.parts and entry not in (spec.get("excludes") or []):
            out.append(entry)
    return out


def client_env(environ: dict[str, str]) -> dict[str, str]:
    """The environment for `ray job submit`: token auth on when a token is at hand and no mode is chosen.

    Ray clusters started on the head with a token (`ray start --head`, 2.59+) reject unauthenticated
    job submission, and the client only sends its token when RAY_AUTH_MODE=token. Sending a token to
    a cluster without auth does no harm.
    """
    env = dict(environ)
    if "RAY_AUTH_MODE" not in env:
        token_file = Path(env.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        if env.get("RAY_AUTH_TOKEN") or token_file.is_file():
            env["RAY_AUTH_MODE"] = "token"
    return env


def job_command(req: SubmitRequest, environ: dict[str, str]) -> list[str]:
    """The `ray job submit` argv (run with this interpreter, so the Ray version matches)."""
    entrypoint = req.entrypoint[1:] if req.entrypoint[:1] == ["--"] else list(req.entrypoint)
    if not entrypoint:
        raise ConfigError("submit: no command given: vidpeft submit [options] -- vidpeft train --config ...")
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit",
           "--address", job_address(req.address, environ),
           "--runtime-env-json", json.dumps(runtime_env(req, environ))]
    if req.submission_id:
        cmd += ["--submission-id", req.submission_id]
    if req.no_wait:
        cmd.append("--no-wait")
    return cmd + ["--", *entrypoint]


def shown(cmd: list[str]) -> str:
    """The command as a user would type it, with secret-looking environment values masked."""
    out = ["ray"] + cmd[3:]
    i = out.index("--runtime-env-json") + 1
    spec = json.loads(out[i])
    env_vars = spec.get("env_vars", {})
    spec["env_vars"] = {k: REDACTED if looks_secret(k) else v for k, v in env_vars.items()}
    if not env_vars:
        del spec["env_vars"]
    out[i] = json.dumps(spec)
    return redact_urls(shlex.join(out))  # e.g. MLFLOW_TRACKING_URI=https://user:password@host


def submit(req: SubmitRequest, dry_run: bool = False, environ: dict[str, str] | None = None) -> int:
    """Submit the job (and, unless no_wait, stream its logs); returns `ray job submit`'s exit code."""
    environ = dict(os.environ if environ is None else environ)
    cmd = job_command(req, environ)
    print(f"[vidpeft] {shown(cmd)}", flush=True)
    env_vars = runtime_env(req, environ).get("env_vars", {})
    if "MLFLOW_TRACKING_URI" not in env_vars and not any("tracking.tracking_uri=" in a for a in req.entrypoint):
        print("[vidpeft] note: MLFLOW_TRACKING_URI is not set, so the job logs to an sqlite file in its "
              "working dir on the cluster; set it to a tracking server to keep the runs", file=sys.stderr)
    secrets = sorted(k for k in env_vars if looks_secret(k))
    if secrets:
        print(f"[vidpeft] note: the job's runtime_env carries {', '.join(secrets)}, and anyone who can reach "
              "the dashboard can read it; prefer the cluster's own environment (e.g. a Kubernetes Secret)",
              file=sys.stderr)
    if dry_run:
        return 0
    check_reachable(job_address(req.address, environ))
    return subprocess.run(cmd, env=client_env(environ), check=False).returncode


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line error when nothing answers at the dashboard's address (instead of `ray job submit`'s
    connection traceback). Any HTTP answer counts, an authentication refusal included: `ray job` handles it."""
    import urllib.error
    import urllib.request

    if not address.startswith(("http://", "https://")):
        return  # ray:// (Ray Client) and other schemes: `ray job` says what it makes of them
    try:
        urllib.request.urlopen(address.rstrip("/") + "/api/version", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"submit: no Ray dashboard answers at {redact_urls(address)} ({reason}); start a cluster "
                          "(`ray start --head`, deploy/) or name its dashboard with --address or RAY_ADDRESS") from None
