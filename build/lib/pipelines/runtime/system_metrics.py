"""MLflow system metrics for a training run: CPU, memory, disk, network, and GPU utilisation and
memory where there is a GPU (MLflow's SystemMetricsMonitor; GPUs need ``nvidia-ml-py``).

The monitor runs in the first Train worker of each node (where the GPUs are), logging into the
driver's run under ``system/...``; several nodes are told apart by MLflow's node id prefix.
"""

from __future__ import annotations

import logging


class SystemMetrics:
    """Context manager: samples every ``seconds`` while the block runs; does nothing when disabled."""

    def __init__(self, uri: str | None, run_id: str | None, seconds: float = 10.0, node: str | None = None,
                 enabled: bool = True) -> None:
        self.monitor = None
        if not (enabled and uri and run_id):
            return
        # MLflow logs each start and stop at INFO; the run's own lines are enough
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.monitor = SystemMetricsMonitor(run_id, sampling_interval=seconds, samples_before_logging=1,
                                            resume_logging=True, node_id=node, tracking_uri=uri)

    def __enter__(self) -> "SystemMetrics":
        if self.monitor is not None:
            self.monitor.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.monitor is not None:
            self.monitor.finish()
