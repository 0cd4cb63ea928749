"""Joining or starting Ray, sized so Train workers never starve the data pipeline."""

from __future__ import annotations

import logging
import os

LOG_LEVEL_ENV = "VIDPEFT_LOG_LEVEL"  # quiet | info | verbose, set by the CLI's --quiet / --verbose


def verbose() -> bool:
    return os.environ.get(LOG_LEVEL_ENV, "info") == "verbose"


def quiet_ray_data() -> None:
    """Ray Data's "Starting execution of Dataset ..." / "Execution plan ..." lines and progress bars
    off unless verbose. Datasets copy the driver's DataContext when built, so call this first."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.print_on_execution_start = verbose()
    ctx.enable_progress_bars = verbose()


def ensure_ray(address: str = "") -> None:
    """Reuse a running Ray (tests share one), join ``address``/RAY_ADDRESS, or start a local one.
    Ray's own start-up messages show only with --verbose."""
    import ray

    quiet_ray_data()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    quiet = {} if verbose() else {"logging_level": logging.WARNING}
    if address:
        ray.init(address=address, log_to_driver=True, **quiet)
        return
    # Local: the dashboard (needed by Ray's State API, which Train uses to clean up placement
    # groups) listens on loopback only.
    ray.init(num_cpus=os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True,
             **quiet)


def use_gpu(setting: bool | str) -> bool:
    """auto: only when the cluster actually offers GPUs."""
    if isinstance(setting, bool):
        return setting
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
