"""The private Ray names in pipelines/ray_compat.py still exist where Ray kept them (fails when Ray moves them)."""

from __future__ import annotations

import dataclasses
import inspect


def test_private_ray_names_are_where_ray_compat_expects_them():
    from ray.train.v2._internal.execution.worker_group.state import WorkerGroupState
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup

    from pipelines import ray_compat

    assert inspect.isclass(ray_compat.WorkerGroupCallback)
    assert callable(getattr(ray_compat.WorkerGroupCallback, "after_worker_group_start", None))
    assert hasattr(ray_compat.PlacementGroupID, "from_hex")
    # what worker_group_placement_group_id walks through
    assert callable(getattr(WorkerGroup, "get_worker_group_state", None))
    assert "placement_group_handle" in {f.name for f in dataclasses.fields(WorkerGroupState)}
    # the quiet mode's copy of Ray Data's logging config needs its console handler
    assert "console" in ray_compat.ray_data_logging_defaults()["handlers"]


def test_only_ray_compat_imports_private_ray_modules():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for d in ("pipelines", "components", "benchmarks", "deploy")
                 for p in (root / d).rglob("*.py")
                 if p.name != "ray_compat.py" and ("ray._raylet" in p.read_text() or "._internal" in p.read_text())]
    assert offenders == []
