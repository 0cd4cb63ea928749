"""Ray Train's settings for short runs (pipelines/runtime/train_env.py)."""

from __future__ import annotations

from pipelines.runtime.train_env import HEALTH_CHECK_ENV, PREEMPTION_WATCHER_ENV, apply_train_env, train_env


def test_local_runs_drop_the_preemption_watcher_clusters_keep_it():
    assert train_env(local=True)[PREEMPTION_WATCHER_ENV] == "0"
    assert PREEMPTION_WATCHER_ENV not in train_env(local=False)
    assert float(train_env(local=False)[HEALTH_CHECK_ENV]) < 2.0  # Ray's default poll: 2 s


def test_a_value_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv(HEALTH_CHECK_ENV, "3")
    monkeypatch.delenv(PREEMPTION_WATCHER_ENV, raising=False)
    apply_train_env(local=True)
    import os

    assert os.environ[HEALTH_CHECK_ENV] == "3" and os.environ[PREEMPTION_WATCHER_ENV] == "0"
