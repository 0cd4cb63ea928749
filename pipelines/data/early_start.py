"""Start a Train worker's data stream before the model is built, so the first batch is ready when the loop asks.

Ray Data starts a dataset's execution (its split coordinator, the decoder actor pool, the manifest blocks) only
when a worker first asks its shard for a batch. Asked after the model build, the first epoch waited seconds for
its first batch (the decoder actor's process start and imports) while nothing else ran. ``EarlyStart`` asks for
the first item on a background thread as soon as the worker holds its shard; the model builds meanwhile, and the
loop's first ``next`` takes the item the thread fetched (or waits for the rest of it). Later items come straight
from the stream on the caller's thread: only the first is fetched ahead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any


class EarlyStart(Iterator):
    """An iterator over ``items`` whose first item is being fetched on a thread from construction on.
    An exception raised while fetching it is raised by the first ``next``, as the stream itself would."""

    def __init__(self, items: Iterable, name: str = "vidpeft-early-start") -> None:
        self._it = iter(items)
        self._first: list[Any] = []
        self._error: BaseException | None = None
        self._done = False  # the stream ended before its first item
        self._taken = False
        self._thread = threading.Thread(target=self._fetch, name=name, daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._first.append(next(self._it))
        except StopIteration:
            self._done = True
        except BaseException as e:  # handed to the caller's thread
            self._error = e

    def __next__(self):
        if not self._taken:
            self._taken = True
            self._thread.join()
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._done:
                raise StopIteration
            return self._first.pop()
        return next(self._it)
