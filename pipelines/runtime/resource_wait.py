"""A run whose Train workers cannot be placed says so in one line.

Ray Train 2.60 retries a worker group that does not fit the cluster's free resources for as long as the run
lives; all a user sees is the controller's ``WorkerGroupStartupTimeoutError`` traceback once a minute. The
usual cause is another run or job holding the CPUs (a killed run's group not yet freed, a second run on the
same instance). This watcher looks at the run's own placement groups (their ids end with the job's id) and,
while one is pending for want of resources, prints what the run asks for and what is free.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from components.config import ConfigError

# Seconds before the first notice, then between notices while the run still waits (env: tests shorten it)
WAIT_ENV = "VIDPEFT_RESOURCE_WAIT_S"
FIRST_S, EVERY_S = 30.0, 300.0
POLL_S = 5.0  # how often the run's placement groups are looked at


def pending_groups(job_hex: str) -> list[dict]:
    """This job's placement groups that Ray has not placed yet."""
    from ray.util.placement_group import placement_group_table

    return [pg for pg_id, pg in placement_group_table().items()
            if pg_id.endswith(job_hex) and pg.get("state") == "PENDING"]


def _resources(d: dict) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(d.items()) if k in ("CPU", "GPU") or k.startswith("accelerator"))


def describe(pending: list[dict], free: dict, waited_s: float) -> str:
    asked = "; ".join(f"{len(pg['bundles'])} x ({_resources(next(iter(pg['bundles'].values())))})"
                      for pg in pending if pg.get("bundles"))
    return (f"[vidpeft] waiting for resources ({waited_s:.0f} s): this run's Train workers need {asked}, "
            f"the cluster has {_resources(free) or 'no CPU'} free; another run or job holds the rest "
            f"(`ray status`, `ray list placement-groups`). The run starts when they are free; Ctrl-C stops it.")


def _first_from_env() -> float:
    raw = os.environ.get(WAIT_ENV, "")
    try:
        value = float(raw) if raw else FIRST_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{WAIT_ENV}={raw!r}: expected the seconds before a waiting run says so (a number > 0)")
    return value


class ResourceWait:
    """While in the block: after ``first_s`` and every ``every_s`` after, one line on stderr if this job's
    placement group is still pending. Quiet when everything was placed; stops at the end of the block."""

    def __init__(self, first_s: float | None = None, every_s: float = EVERY_S) -> None:
        self.first_s = _first_from_env() if first_s is None else first_s
        self.every_s = every_s
        self._stop = threading.Event()

    def __enter__(self) -> "ResourceWait":
        import ray

        job = ray.get_runtime_context().get_job_id()
        threading.Thread(target=self._watch, args=(job,), name="vidpeft-resource-wait", daemon=True).start()
        return self

    def _watch(self, job: str) -> None:
        import ray

        start, say_at, before = time.monotonic(), self.first_s, False
        while not self._stop.wait(min(POLL_S, self.first_s)):  # the group appears a few seconds into the fit
            try:
                pending = pending_groups(job)
                waited = time.monotonic() - start
                if pending and before and waited >= say_at:  # pending at two looks: not a group being placed
                    print(describe(pending, ray.available_resources(), waited), file=sys.stderr, flush=True)
                    say_at = waited + self.every_s
                before = bool(pending)
            except Exception:  # the instance is going away with the run: nothing to say
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
