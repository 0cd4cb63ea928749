"""pipelines/runtime/background.py: a call on a thread, its value or its exception taken later."""

from __future__ import annotations

import threading

import pytest

from pipelines.runtime.background import Background


def test_the_value_is_taken_after_the_call_ran_on_another_thread():
    caller = threading.get_ident()
    job = Background(lambda: threading.get_ident(), name="t")
    assert job.result() not in (None, caller)


def test_what_the_call_raised_is_raised_where_the_result_is_taken_once():
    def fail():
        raise ValueError("store unreachable")

    job = Background(fail, name="t")
    with pytest.raises(ValueError, match="store unreachable"):
        job.result()
    assert job.result() is None  # raised once


def test_settle_waits_for_the_call_and_raises_nothing():
    done = threading.Event()

    def slow_fail():
        done.wait(5)
        raise RuntimeError("late")

    job = Background(slow_fail, name="t")
    done.set()
    job.settle(5)  # the caller is handling its own error: nothing is raised over it
    assert not job._thread.is_alive()
