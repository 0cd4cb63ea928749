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
