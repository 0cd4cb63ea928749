"""A local sqlite MLflow store is created once, under a lock, before anything uses it.

MLflow builds a fresh sqlite store's schema (tables, migrations, the Default experiment) on first use;
two processes doing that at once (two runs started together, Tune trials) crash on each other's half
made tables. The first user creates it while holding an ``flock`` on ``<db>.lock``; the others wait,
then find it made. Remote stores (http://, databricks, ...) are created by their server.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

_READY: set[str] = set()


def ensure_store(uri: str) -> None:
    """Create the sqlite store at ``uri`` if needed, one process at a time (no-op for other stores)."""
    if uri in _READY or not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # builds schema + Default experiment
    _READY.add(uri)
