"""ray_env.attach_early: a run attaches before its imports only to a warm local instance; a cluster address,
or no warm instance, leaves the attach to after the config is checked (no Ray is touched here)."""

from __future__ import annotations

import json

import pytest

from pipelines.runtime import ray_env


@pytest.fixture
def fresh_env(monkeypatch, tmp_path):
    for name in ("RAY_ADDRESS", ray_env.LOOPBACK_GCS_ENV, ray_env.NO_WARM_ENV):
        monkeypatch.delenv(name, raising=False)
    from pipelines.runtime import warm_ray

    monkeypatch.setattr(warm_ray, "STATE", tmp_path / "warm-ray.json")  # this test's own (absent) state file
    return monkeypatch


def test_a_cluster_address_is_joined_after_the_config_is_checked(fresh_env):
    fresh_env.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_env.attach_early() == ""
    fresh_env.setenv(ray_env.LOOPBACK_GCS_ENV, "127.0.0.1:6380")  # vidpeft's own instance is another one
    assert ray_env.attach_early() == ""


def test_no_warm_instance_means_no_early_attach(fresh_env, tmp_path):
    assert ray_env.attach_early() == ""  # no state file
    (tmp_path / "warm-ray.json").write_text(json.dumps({"address": "127.0.0.1:1", "pid": 2 ** 22 + 7}))
    assert ray_env.attach_early() == ""  # a stale one: its process is gone
    fresh_env.setenv(ray_env.NO_WARM_ENV, "1")
    assert ray_env.attach_early() == ""
