"""A run whose Train workers do not fit the free CPUs says so in one line (Ray Train alone retries in
silence but for a traceback a minute), and starts when the CPUs are free."""

from __future__ import annotations

import time

import pytest

from components.config import ConfigError
from pipelines.runtime.resource_wait import WAIT_ENV, ResourceWait, describe
from tests.pipelines.run.test_faults import finished, start_driver, train_args

pytestmark = pytest.mark.e2e


def test_describe_names_what_the_run_needs_and_what_is_free():
    line = describe([{"bundles": {0: {"CPU": 1.5}, 1: {"CPU": 1.5}}, "state": "PENDING"}],
                    {"CPU": 0.5, "memory": 1e9, "node:127.0.0.1": 1.0}, 30)
    assert line.startswith("[vidpeft] waiting for resources (30 s): ") and "\n" not in line
    assert "need 2 x (1.5 CPU)" in line and "has 0.5 CPU free" in line and "memory" not in line


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan"])
def test_a_bad_wait_setting_is_one_error_naming_it(monkeypatch, value):
    monkeypatch.setenv(WAIT_ENV, value)
    with pytest.raises(ConfigError, match=rf"^{WAIT_ENV}='{value}': expected the seconds"):
        ResourceWait()


def test_a_run_waiting_for_cpus_says_so_and_starts_when_they_are_free(ray_session, synth_data, tmp_path):
    ray = ray_session
    total = ray.cluster_resources()["CPU"]
    deadline = time.monotonic() + 120
    while ray.available_resources().get("CPU", 0) < total:  # an earlier test's actors hand their CPUs back
        assert time.monotonic() < deadline, f"CPUs still held after 120 s: {ray.available_resources()}"
        time.sleep(0.5)
    held = total - 0.5  # half a CPU stays free: less than the worker asks

    @ray.remote
    class Holder:  # another job's actor, as far as the run can tell
        def ready(self) -> bool:
            return True

    holder = Holder.options(num_cpus=held).remote()
    ray.get(holder.ready.remote())
    log = tmp_path / "train.log"
    args = train_args(synth_data, tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "shared", 1,
                      "--set", "scaling.in_process=false", "--set", "scaling.cpus_per_worker=1",
                      "--set", "data.decode_cpus=0.25")
    proc = start_driver(ray_session, args, log, {WAIT_ENV: "2"})
    try:
        deadline = time.monotonic() + 300
        while "waiting for resources" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, f"no notice after 300 s:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
    finally:
        ray.kill(holder)  # the CPUs come back: the waiting run goes on
    text = finished(proc, log)
    notice = next(ln for ln in text.splitlines() if "waiting for resources" in ln)
    assert "need 1 x (1 CPU)" in notice and "has 0.5 CPU free" in notice, notice
    assert "val_top1" in text
