"""Shared fixtures: one Ray instance for the whole session, tiny model configs, a tiny dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# a warm Ray a developer keeps (`vidpeft ray up`) is not the suite's: tests start and share their own
os.environ.setdefault("VIDPEFT_NO_WARM_RAY", "1")

# The one-run example config (a tiny ViT with bottleneck adapters and a CAA): most e2e tests start from it.
DEMO_CONFIG = Path(__file__).parents[1] / "pipelines" / "configs" / "demo.yaml"

TINY_VIT = {
    "family": "timm_vit",
    "name": "vit_tiny_patch16_224",
    "img_size": 32,
    "num_frames": 4,
    "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
}


def own_lines(text: str) -> str:
    """`text` without the lines Ray forwards from the test session's shared instance: its raylet and workers
    print into whatever test is running at the time (a disk-space warning came through a CLI error test in CI),
    and those lines are not the command's."""
    import re

    ray_prefix = re.compile(r"^\((raylet|[\w.]*\s*pid=\d+[^)]*)\)")
    return "\n".join(ln for ln in text.splitlines() if not ray_prefix.match(ln.strip()))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers share 2 cores: one torch thread each
        import torch

        torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """Two lanes for `make test` (pytest-xdist ``-n 2 --dist loadgroup``; a plain run keeps this order).

    Every test that uses the shared Ray instance, and those that start Ray nodes of their own (marker
    ``ray_cluster``), are one group: they run on one worker, in order, so there is one shared instance, as in
    a serial run, and a cluster's nodes never start beside another test's load on the instance (a Ray node of
    the two-node test timed out in its start, "the GCS has become overloaded", when the heavy tests were
    spread over both workers). The other worker runs everything else. The cluster tests go last in their
    lane: by then the other lane has finished and the machine is as quiet as in a serial run."""
    lane = pytest.mark.xdist_group("ray")
    for item in items:
        if "ray_session" in item.fixturenames or item.get_closest_marker("ray_cluster"):
            item.add_marker(lane)
    items.sort(key=lambda item: item.get_closest_marker("ray_cluster") is not None)  # stable: order kept


def one_lane_only() -> None:
    """Under pytest-xdist, fail when a second worker asks for the shared instance: the lane grouping
    (pytest_collection_modifyitems) was not applied, and two instances would load the machine twice."""
    import tempfile

    worker, run = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not (worker and run):
        return
    claim = Path(tempfile.gettempdir()) / f"vidpeft-tests-{run}.ray-lane"
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = claim.read_text()
        if holder != worker:
            pytest.fail(f"the shared Ray instance's tests ran on two workers ({holder} and {worker}): the "
                        "xdist_group lane was not applied (pytest-xdist's loadgroup and this pytest disagree)")
        return
    with os.fdopen(fd, "w") as f:
        f.write(worker)


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray instance shared by every test that needs one (start-up costs ~5 s)."""
    import ray

    one_lane_only()

    from pipelines.runtime.ray_env import ensure_ray

    ensure_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A small motion dataset (4 classes) with two corrupt files in the train split."""
    from components.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(root, num_classes=4, clips_per_class=16, frames=16, size=32, seed=0, corrupt=2)
