"""EarlyStart: a stream whose first item is fetched on a thread before anyone asks for it."""

from __future__ import annotations

import threading

import pytest

from pipelines.data.early_start import EarlyStart


def test_items_come_out_in_order_and_the_stream_ends():
    assert list(EarlyStart(iter(range(5)))) == [0, 1, 2, 3, 4]
    assert list(EarlyStart(iter([]))) == []


def test_the_first_item_is_fetched_before_it_is_asked_for():
    asked = threading.Event()

    def stream():
        asked.set()  # runs on EarlyStart's thread, before the caller's first next()
        yield "first"
        yield "second"

    items = EarlyStart(stream())
    assert asked.wait(timeout=60)
    assert next(items) == "first" and next(items) == "second"
    with pytest.raises(StopIteration):
        next(items)


def test_an_error_fetching_the_first_item_is_raised_by_the_first_next():
    def broken():
        raise RuntimeError("decoder pool failed")
        yield  # a generator

    items = EarlyStart(broken())
    with pytest.raises(RuntimeError, match="decoder pool failed"):
        next(items)
