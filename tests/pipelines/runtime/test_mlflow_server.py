"""Tracking against a real `mlflow server` on 127.0.0.1: nested runs from concurrent trials, run
statuses after a scheduler stop, and a campaign report rebuilt from the server alone.

The ``mlflow_server`` fixture is session-wide: tests/pipelines/search/test_tune_e2e.py runs its search against it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from pipelines.runtime import tracking
from pipelines.runtime.ray_env import free_loopback_port as free_port


@contextlib.contextmanager
def served_mlflow(root, extra_args: tuple = (), env: dict | None = None):
    """`mlflow server` (sqlite backend in ``root``, served artifacts) on 127.0.0.1, its own cwd ``root``;
    yields its http URI once it answers, and stops it (its whole process group) after."""
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", *extra_args, "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # own process group: stopped as one
        # MLflow 3's server also starts a job runner (7 more processes importing mlflow, about 7 s of a 2-core
        # machine's start-up); tracking does not use it
        cwd=root, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})})
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError:
                break  # it answers (a server with auth may refuse)
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real tracking server (sqlite backend, served artifacts), bound to loopback; stopped after."""
    with served_mlflow(tmp_path_factory.mktemp("mlflow_server")) as uri:
        yield uri


def _children(client, parent_id: str):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000)


def test_concurrent_trials_get_one_nested_run_each(mlflow_server, tmp_path):
    """What tune/ablate do: the CLI opens a parent, trials open and fill nested runs at the same time."""
    from mlflow.tracking import MlflowClient

    uri = mlflow_server
    parent = tracking.start_run(uri, "server-concurrency", "tune-x", {"search.trials": "6"},
                                tags={"vidpeft.kind": "search"})
    artifact = tmp_path / "config.yaml"
    artifact.write_text("optim: {lr: 0.001}\n")
    params = {f"model.p{i:03d}": str(i) for i in range(150)}  # more than one log_batch of params

    def trial(i: int) -> str:
        run = tracking.start_run(uri, "server-concurrency", f"trial-{i}", {**params, "optim.lr": str(i)},
                                 tags={"mlflow.parentRunId": parent, "vidpeft.trial_id": f"t{i}"})
        for epoch in range(3):
            tracking.log_metrics(uri, run, {"val_top1": 0.1 * (epoch + i), "epoch": epoch}, step=epoch)
        tracking.log_artifact(uri, run, artifact)
        tracking.end_run(uri, run)
        return run

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(trial, range(6)))
    tracking.end_run(uri, parent)

    client = MlflowClient(uri)
    runs = _children(client, parent)
    assert sorted(r.info.run_id for r in runs) == sorted(ids)  # one each, no duplicates
    for r in runs:
        i = int(r.data.tags["vidpeft.trial_id"][1:])
        assert r.info.status == "FINISHED" and r.data.params["optim.lr"] == str(i) and len(r.data.params) == 151
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_top1")] == [0, 1, 2]
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["config.yaml"]
    # the parent holds only its own params; trials never wrote into it
    assert client.get_run(parent).data.params == {"search.trials": "6"}


def test_runs_of_stopped_and_failed_trials_are_closed(mlflow_server):
    """A trial stopped by ASHA dies mid-run: its run is closed as KILLED, a crashed one's as FAILED. The epoch
    the scheduler judged is in the stopped trial's run once, also when the trial died before logging it."""
    from mlflow.tracking import MlflowClient

    from pipelines.search.tune import close_trial_runs

    uri = mlflow_server
    parent = tracking.start_run(uri, "server-status", "tune-y", {})
    runs = {}
    for trial, end in [("a", "FINISHED"), ("b", None), ("c", None), ("e", None)]:
        runs[trial] = tracking.start_run(uri, "server-status", trial, {},
                                         tags={"mlflow.parentRunId": parent, "vidpeft.trial_id": trial})
        if end:
            tracking.end_run(uri, runs[trial], end)
    # d: cut short by Ctrl-C (Tune never reported it ended): closed, but not as stopped early
    runs["d"] = tracking.start_run(uri, "server-status", "d", {},
                                   tags={"mlflow.parentRunId": parent, "vidpeft.trial_id": "d"})
    # b and e: stopped on their epoch 0, as Tune got it (its keys and the reporter's beside the run's metrics);
    # e had logged that epoch before it was stopped, b had not
    epoch0 = {"epoch": 0, "train_loss": 1.5, "val_loss": 1.25, "val_top1": 0.5}
    tracking.log_metrics(uri, runs["e"], epoch0, step=0)
    reported = {**epoch0, "training_iteration": 1, "time_total_s": 3.5, "timestamp": 1700000000, "done": False,
                "trial_id": "b", "epochs_done": 1, "train_placement_group": "", "config": {"optim.lr": 2.0}}
    results = [SimpleNamespace(path=f"/search/tune/{t}", error=err, metrics=reported if t in "be" else {})
               for t, err in [("a", None), ("b", None), ("c", RuntimeError("boom")), ("d", None), ("e", None)]]
    status = close_trial_runs(uri, parent, results, ended={"a", "b", "c", "e"})
    assert status == {"a": "FINISHED", "b": "KILLED", "c": "FAILED", "d": "KILLED", "e": "KILLED"}
    client = MlflowClient(uri)
    assert client.get_run(runs["b"]).data.tags["vidpeft.stopped_early"] == "true"
    for trial in "be":
        logged = client.get_run(runs[trial]).data.metrics
        assert logged == epoch0, logged  # nothing of Tune's
        assert [(m.step, m.value) for m in client.get_metric_history(runs[trial], "val_loss")] == [(0, 1.25)]
    assert "vidpeft.stopped_early" not in client.get_run(runs["d"]).data.tags
    assert client.get_run(runs["c"]).info.status == "FAILED"


def test_campaign_report_from_the_server_alone(mlflow_server, tmp_path):
    """`vidpeft report` needs nothing but the server: layout artifact + nested cell runs."""
    from pipelines.search.campaign import LAYOUT
    from pipelines.cli import main

    uri = mlflow_server
    layout = {"name": "srv", "metric": "val_top1", "mode": "max", "seeds": [0, 1],
              "datasets": [{"name": "a", "label": "A"}],
              "variants": [{"name": "ad", "label": "Adapters"}, {"name": "lin", "label": "Linear"}],
              "cells": [{"dataset": "a", "variant": v, "seed": s, "key": f"{v}{s}"} for v in ("ad", "lin") for s in (0, 1)]}
    parent = tracking.start_run(uri, "server-report", "campaign-srv", {},
                                tags={"vidpeft.kind": "campaign", "vidpeft.campaign": "srv"})
    (tmp_path / LAYOUT).write_text(json.dumps(layout))
    tracking.log_artifact(uri, parent, tmp_path / LAYOUT)
    curves = {"ad0": [0.30, 0.60, 0.795, 0.80], "ad1": [0.40, 0.70, 0.70, 0.70], "lin0": [0.2, 0.3, 0.4, 0.5]}
    for key, curve in curves.items():  # lin1 never finished: the table says so
        run = tracking.start_run(uri, "server-report", key, {}, tags={"mlflow.parentRunId": parent,
                                                                      "vidpeft.cell_key": key})
        for epoch, v in enumerate(curve):
            tracking.log_metrics(uri, run, {"val_top1": v, "trainable_pct": 1.5 if key[0] == "a" else 0.1,
                                            "gflops": 2.0}, step=epoch)
        tracking.end_run(uri, run)
    tracking.end_run(uri, parent)

    out = tmp_path / "report"
    assert main(["report", "srv", "--tracking-uri", uri, "--out", str(out)]) == 0
    rows = (out / "report.csv").read_text().splitlines()
    assert rows[0].startswith("variant,dataset,metric,mean,std,paper,seeds_done,seeds,epochs_to_converge")
    ad = dict(zip(rows[0].split(","), rows[1].split(",")))
    assert ad["variant"] == "ad" and abs(float(ad["mean"]) - 0.75) < 1e-9
    assert abs(float(ad["std"]) - 0.0707107) < 1e-6
    assert float(ad["epochs_to_converge"]) == 2.5  # epoch 3 (0.795 is within 0.01 of 0.80) and epoch 2
    md = (out / "report.md").read_text()
    # columns: trainable % (adapters), with head, GFLOPs, the metric, the paper's value, epochs to converge
    assert "| Adapters | 1.50 | – | 2.000 | 75.0 ± 7.1 | – | 2.5 |" in md
    assert "| Linear | 0.10 | – | 2.000 | 50.0 ± 0.0 (1/2 seeds) | – | 4.0 |" in md
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", "nope", "--tracking-uri", uri, "--out", str(out)]) == 2
