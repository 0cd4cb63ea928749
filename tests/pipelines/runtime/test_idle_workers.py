"""vidpeft's local Ray keeps a running job's idle workers (pipelines/runtime/ray_compat.keep_idle_workers).

Ray 2.60's workers now and then abort as the raylet stops them for being idle ("Mutex corrupt: both reader and
writer lock held", SIGABRT), and the dump reached `vidpeft predict`'s console from Ray Data's metadata-task
workers. With Ray's default the extra workers below are stopped 10 s after their tasks end, and the test fails.
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_idle_task_workers_above_the_soft_limit_are_not_stopped(ray_session):
    ray = ray_session
    cpus = int(ray.cluster_resources()["CPU"])

    @ray.remote(num_cpus=0)
    def worker_pid(hold_s: float) -> int:
        time.sleep(hold_s)  # held together, so each task gets a worker process of its own
        return os.getpid()

    pids = set(ray.get([worker_pid.remote(6.0) for _ in range(cpus + 2)]))
    assert len(pids) > cpus, f"only {len(pids)} worker(s) for {cpus + 2} tasks held together: nothing to stop"
    time.sleep(16)  # idle for longer than Ray's default threshold (10 s) plus its 200 ms killing interval
    stopped = sorted(p for p in pids if not _alive(p))
    assert stopped == [], f"idle workers {stopped} were stopped while the job runs (of {sorted(pids)})"
