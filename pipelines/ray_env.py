"""Joining or starting Ray, sized so Train workers never starve the data pipeline."""

from __future__ import annotations

import os


def ensure_ray(address: str = "") -> None:
    """Reuse a running Ray (tests share one), join ``address``/RAY_ADDRESS, or start a local one."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    # Local: the dashboard (needed by Ray's State API, which Train uses to clean up placement
    # groups) listens on loopback only.
    ray.init(num_cpus=os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)


def use_gpu(setting: bool | str) -> bool:
    """auto: only when the cluster actually offers GPUs."""
    if isinstance(setting, bool):
        return setting
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
