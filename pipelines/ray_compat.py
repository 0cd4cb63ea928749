"""Every private Ray name vidpeft uses, in one place (checked against Ray 2.60).

Ray Train V2 has no public hook for "the worker group started", and a placement group is freed by
id only through ``ray._raylet``. When Ray moves either, tests/test_ray_compat.py fails and this is
the only file to fix.
"""

from __future__ import annotations

from ray._raylet import PlacementGroupID  # noqa: F401
from ray.train.v2._internal.execution.callback import WorkerGroupCallback  # noqa: F401


def worker_group_placement_group_id(worker_group) -> str:
    """Hex id of the placement group a Train worker group runs in (``WorkerGroupCallback`` hooks)."""
    return worker_group.get_worker_group_state().placement_group_handle.placement_group.id.hex()


def ray_data_logging_defaults() -> dict:
    """Ray Data's default logging config (private in Ray 2.60); the quiet mode edits a copy of it."""
    from ray.data._internal.logging import DEFAULT_CONFIG

    return DEFAULT_CONFIG
