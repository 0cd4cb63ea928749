"""Every MLflow run a driver opens ends with a status: a failure anywhere after the run is opened
(Ray start-up, dataset or trainer construction, result copying) marks it FAILED, an interrupt KILLED,
so no run is left RUNNING forever by a driver that is gone."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def runs_closed_on_failure():
    """Yields a list; append ``(tracking_uri, run_id)`` when a run is opened. On an exception, each run
    still RUNNING is set to FAILED (KILLED for Ctrl-C / SystemExit) before the exception goes on."""
    opened: list[tuple[str, str]] = []
    try:
        yield opened
    except BaseException as e:
        status = "KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "FAILED"
        for uri, run_id in opened:
            _close(uri, run_id, status)
        raise


def _close(uri: str, run_id: str, status: str) -> None:
    from pipelines.runtime import tracking

    try:
        c = tracking.client(uri)
        if c.get_run(run_id).info.status == "RUNNING":
            c.set_terminated(run_id, status=status)
    except Exception as e:  # the store itself may be what failed: say so, keep the original error
        print(f"[vidpeft] could not mark MLflow run {run_id} {status}: {e}", flush=True)
