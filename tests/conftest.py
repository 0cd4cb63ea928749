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


# The shared-instance tests of these folders form the second Ray lane (about half of that work, measured).
SECOND_RAY_LANE = ("tests/pipelines/search/", "tests/pipelines/infer/", "tests/pipelines/demo/", "tests/benchmarks/",
                   "tests/vidpeft/")


CLUSTER_TESTS = "tests/pipelines/runtime/"  # the folder the Makefile's second step collects (CLUSTER_TESTS)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """Lanes for `make test` (pytest-xdist ``-n 2 --dist loadgroup``; a plain run keeps this order).

    The tests that use a shared Ray instance are two groups ("ray", "ray2"), each run in order on one worker
    with that worker's own instance (2 instances in all, as 2 workers need). Everything else (unit tests, the
    tests with servers or a Ray of their own) fills in on whichever worker has finished its group. The tests
    that start Ray nodes of their own (marker ``ray_cluster``) run after the others in a run of their own
    (`make test`); where one runs in the same session, it closes the "ray" group."""
    for item in items:
        if item.get_closest_marker("ray_cluster"):
            if not item.nodeid.startswith(CLUSTER_TESTS):  # make test's second step would never run it
                raise pytest.UsageError(f"{item.nodeid}: a ray_cluster test belongs in {CLUSTER_TESTS} "
                                        "(`make test` runs that folder's ray_cluster tests in a step of their own)")
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif "ray_session" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("ray2" if item.nodeid.startswith(SECOND_RAY_LANE) else "ray"))
    items.sort(key=lambda item: item.get_closest_marker("ray_cluster") is not None)  # stable: order kept


def pytest_runtest_setup(item):
    """Under pytest-xdist, a group's tests must all run on the worker that started them (one Ray instance per
    group): fail when another worker gets one (pytest-xdist did not apply the groups)."""
    import tempfile

    group = item.get_closest_marker("xdist_group")
    worker, run = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not (group and worker and run):
        return
    claim = Path(tempfile.gettempdir()) / f"vidpeft-tests-{run}.{group.args[0]}"
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = claim.read_text()
        if holder and holder != worker:
            pytest.fail(f"test group {group.args[0]!r} ran on two workers ({holder} and {worker}): pytest-xdist "
                        "did not keep it on one (its loadgroup and this pytest disagree)")
        return
    with os.fdopen(fd, "w") as f:
        f.write(worker)
    _CLAIMS.append(claim)


_CLAIMS: list[Path] = []  # the group claims this worker made, removed when its session ends


def pytest_sessionfinish(session, exitstatus):
    for claim in _CLAIMS:
        claim.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray instance shared by every test that needs one (start-up costs ~5 s)."""
    import ray

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
