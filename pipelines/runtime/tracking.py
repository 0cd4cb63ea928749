"""MLflow tracking: one run per training job, created by the driver, written to by rank 0 only.

The driver creates (or, on --resume, reopens) the run and passes its id to the workers; rank 0
logs per-epoch metrics into that id through an ``MlflowClient``. Nothing relies on MLflow's
process-global "active run", so Ray processes never open a second run by accident.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from pipelines.runtime.phase_log import mark
from pipelines.runtime.redaction import REDACTED, looks_secret, redact_urls  # noqa: F401  (REDACTED re-exported)

ENV_URI = "MLFLOW_TRACKING_URI"
_NAMED_STORES = {"databricks", "databricks-uc", "uc"}  # tracking URIs MLflow reads as names, not paths


def resolve_tracking_uri(configured: str = "", workdir: str | Path | None = None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else an sqlite store at an absolute path. A local store given
    by a relative path (``sqlite:///mlflow.db``, ``mlruns``) is made absolute here, in the command's directory:
    Ray Train workers and Tune trials run in directories of their own, where it would name another store."""
    base = Path(workdir or os.getcwd()).absolute()
    uri = configured or os.environ.get(ENV_URI, "")
    if not uri:
        return f"sqlite:///{base / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # sqlite:///REL, not sqlite:////ABS
        path, sep, query = uri.removeprefix("sqlite:///").partition("?")
        return f"sqlite:///{base / path}{sep}{query}" if path and path != ":memory:" else uri
    if ":" not in uri.split("/", 1)[0] and uri not in _NAMED_STORES:  # no scheme: a path, MLflow's file store
        return str(base / Path(uri).expanduser())  # an absolute or ~ path stays where it points
    return uri


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.backbone.name": "..."} with string values (MLflow params)."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, list) and data and any(isinstance(v, (dict, list)) for v in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = str(data)
    return out


# Secret-looking names: these words anywhere in the last dotted part, or a name that is/ends in "key".


def _plain_value(v: str) -> bool:
    """Empty, a number or a boolean: nothing a secret could be (``key_dim: 64`` stays visible)."""
    if v.lower() in ("", "none", "null", "true", "false"):
        return True
    try:
        float(v)
        return True
    except ValueError:
        return False


def redact(params: dict[str, str]) -> dict[str, str]:
    """Params safe to log: values of secret-looking keys, any value of a secret-looking environment
    variable (e.g. MLFLOW_TRACKING_PASSWORD, AWS_SECRET_ACCESS_KEY, RAY_AUTH_TOKEN) wherever it appears,
    and passwords inside URLs (``https://user:***@host``) are replaced by ``***``."""
    env_secrets = sorted((v for k, v in os.environ.items() if looks_secret(k) and len(v) >= 6), key=len, reverse=True)
    out = {}
    for key, value in params.items():
        if looks_secret(key) and not _plain_value(value):
            out[key] = REDACTED
            continue
        for secret in env_secrets:
            value = value.replace(secret, REDACTED)
        out[key] = redact_urls(value)
    return out


def artifact_root(uri: str) -> str | None:
    """Artifacts beside a local sqlite store (absolute), not in whatever the cwd happens to be."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").absolute().as_uri()
    return None  # a tracking server decides (its --artifacts-destination)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    from pipelines.runtime.mlflow_store import ensure_store

    ensure_store(uri)  # a fresh sqlite store: created once, by one process
    if redact_urls(uri) != uri:  # MLflow's own "View run at" lines would print the password: end_run says it
        os.environ[SUPPRESS_URL_ENV] = "true"
    return MlflowClient(tracking_uri=uri)


SUPPRESS_URL_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"  # read by MLflow each time a run ends
_USERINFO = re.compile(r"(://)[^/@\s]*@")


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page on a tracking server, without the credentials of ``uri``."""
    host = _USERINFO.sub(r"\1", uri).rstrip("/")
    return f"{host}/#/experiments/{experiment_id}/runs/{run_id}"


def start_run(uri: str, experiment: str, run_name: str, params: dict[str, str], tags: dict[str, str] | None = None,
              run_id: str | None = None) -> str:
    """Create a run (or reuse ``run_id``) and log params once; returns the run id."""
    from mlflow.entities import Param, RunTag
    mark("mlflow_start")

    c = client(uri)
    if run_id:
        c.update_run(run_id, status="RUNNING")
        return run_id
    exp = c.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else c.create_experiment(experiment, artifact_location=artifact_root(uri))
    run = c.create_run(exp_id, run_name=run_name, tags=tags or {})
    items = [Param(k, v[:6000]) for k, v in sorted(redact(params).items())]
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        c.log_batch(run.info.run_id, params=items[i : i + 100])
    if tags:
        c.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    mark("mlflow_started")
    return run.info.run_id


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [Metric(k, float(v), ts, step) for k, v in metrics.items() if isinstance(v, (int, float))]
    client(uri).log_batch(run_id, metrics=items)


def log_epoch_once(uri: str, run_id: str, metrics: dict[str, float], epoch: int) -> int:
    """On a restart from epoch ``epoch``'s checkpoint: log its metrics when the worker that made it was lost
    before logging them; returns the last optimizer step with a step_* point, which later points pass."""
    c = client(uri)
    keys = [k for k, v in metrics.items() if isinstance(v, (int, float))]
    if keys and not any(m.step == epoch for m in c.get_metric_history(run_id, keys[0])):
        log_metrics(uri, run_id, metrics, step=epoch)
    return max((m.step for m in c.get_metric_history(run_id, "step_train_loss")), default=0)


def log_artifact(uri: str, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    client(uri).log_artifact(run_id, str(path), artifact_path)


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    mark("mlflow_end")
    c = client(uri)
    c.set_terminated(run_id, status=status)
    if uri.startswith(("http://", "https://")) and redact_urls(uri) != uri:  # MLflow's own line is off: ours
        print(f"[vidpeft] MLflow run: {run_url(uri, c.get_run(run_id).info.experiment_id, run_id)}", flush=True)
