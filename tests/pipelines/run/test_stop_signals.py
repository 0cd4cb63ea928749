"""A stopped run stops: a second SIGTERM, or the grace period after the first, ends a driver whose
Ctrl-C handler is stuck (as Ray Train's ``ray.get`` can be on a loaded machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

STUCK_DRIVER = textwrap.dedent("""
    import signal, sys, time
    from pipelines.runtime.stop_signals import stop_like_ctrl_c

    def stuck_ray_handler(signum, frame):  # stands in for Ray Train's SIGINT handler blocked in ray.get
        print("handler", flush=True)
        time.sleep(3600)

    with stop_like_ctrl_c(grace=float(sys.argv[1])):
        signal.signal(signal.SIGINT, stuck_ray_handler)  # fit() installs its handler inside the block
        print("ready", flush=True)
        time.sleep(3600)
""")


def start(grace: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", STUCK_DRIVER, str(grace)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("how", ["second_signal", "grace_period"])
def test_a_stuck_stop_still_ends_the_driver(how):
    proc = start(grace=3600 if how == "second_signal" else 1)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "handler"  # the first signal went to the Ctrl-C handler
        if how == "second_signal":
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)  # a hang guard, not a timing assertion
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert rc == 130, err
    assert ("second stop signal" if how == "second_signal" else "still stopping") in err
    assert "--resume" in err and "Traceback" not in err
