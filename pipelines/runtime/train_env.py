"""Ray Train's own settings that cost a short run seconds, set before a ``TorchTrainer`` is built.

Ray Train (2.60) reads them from environment variables in the driver and passes them on to its controller
(ray/train/v2/_internal/constants.py, ENV_VARS_TO_PROPAGATE). A value the user set is kept.

- ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (Ray: 2 s): the controller polls the worker group at this interval and
  only then sees that the workers started or finished, so every run waited up to 2 s at each end for nothing.
  0.5 s: a poll is one small remote call per worker.
- ``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER`` (Ray: on): an extra actor that polls Ray for nodes being drained
  (spot instances). On a local instance vidpeft started (every node on loopback) no node is ever drained, and
  the actor's process start competes with the run's for the CPUs: off there.
"""

from __future__ import annotations

import os

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
HEALTH_CHECK_S = "0.5"


def train_env(local: bool) -> dict[str, str]:
    """The settings for a run on a local instance (``local``) or a cluster."""
    env = {HEALTH_CHECK_ENV: HEALTH_CHECK_S}
    if local:
        env[PREEMPTION_WATCHER_ENV] = "0"
    return env


def apply_train_env(local: bool) -> None:
    """Set ``train_env(local)`` in this process's environment, keeping any value already set."""
    for key, value in train_env(local).items():
        os.environ.setdefault(key, value)
