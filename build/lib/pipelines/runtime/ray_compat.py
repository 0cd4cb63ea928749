"""Every private Ray name vidpeft uses, in one place (checked against Ray 2.60).

Ray Train V2 has no public hook for "the worker group started", a placement group is freed by
id only through ``ray._raylet``, and a local instance can be kept on loopback only through a
private constant, the lines Ray forwards from its workers to the driver pass one private
dispatcher, and a streaming repartition takes task options only on its logical operator. When
Ray moves one, tests/pipelines/runtime/test_ray_compat.py fails and this is the only file to fix.
"""

from __future__ import annotations

from ray._raylet import PlacementGroupID  # noqa: F401
from ray.train.v2._internal.execution.callback import WorkerGroupCallback  # noqa: F401


def worker_group_placement_group_id(worker_group) -> str:
    """Hex id of the placement group a Train worker group runs in (``WorkerGroupCallback`` hooks)."""
    return worker_group.get_worker_group_state().placement_group_handle.placement_group.id.hex()


def ray_data_logging_defaults() -> dict:
    """Ray Data's default logging config (private in Ray 2.60); the quiet mode edits a copy of it."""
    from ray.data._internal.logging import DEFAULT_CONFIG

    return DEFAULT_CONFIG


def reconfigure_ray_data_logging() -> None:
    """Ray Data's loggers set up again from RAY_DATA_LOGGING_CONFIG (``import ray.data`` read it once)."""
    from ray.data._internal.logging import configure_logging

    configure_logging()


def keep_local_node_on_loopback() -> None:
    """Make the next local ``ray.init()`` use 127.0.0.1 as its node address, so its GCS, raylet,
    worker, agent and metrics servers listen on loopback only.

    Ray turns an explicit ``_node_ip_address="127.0.0.1"`` into the machine's external address, and
    its servers then listen on every interface; only the (private) single-machine mode, the one Ray
    uses on macOS and Windows, keeps them on loopback. A process that joins a cluster must not call
    this: other machines could not reach it.
    """
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def drop_forwarded_lines(drop) -> None:
    """Lines Ray forwards from its workers' stdout/stderr to this driver for which ``drop(line)`` is
    true are not printed (Ray's log files keep them). Call after ``ray.init``."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    def wrap(handler):
        if getattr(handler, "vidpeft_filter", False):
            return handler

        def handle(batch):
            lines = [line for line in batch.get("lines", []) if not drop(line)]
            if lines:
                handler({**batch, "lines": lines})

        handle.vidpeft_filter = True
        return handle

    with dispatcher._lock:
        dispatcher.handlers = [(name, wrap(h) if name == "ray_print_logs" else h) for name, h in dispatcher.handlers]
    # The raylet's warnings reach the driver through its error channel, whose thread calls the module's
    # print_to_stdstream directly (ray/_private/worker.py: listen_error_messages), not the dispatcher
    import ray._private.worker as ray_worker

    direct = ray_worker.print_to_stdstream
    if not getattr(direct, "vidpeft_filter", False):
        def print_to_stdstream(data, ignore_prefix):
            wrap(lambda batch: direct(batch, ignore_prefix))(data)

        print_to_stdstream.vidpeft_filter = True
        ray_worker.print_to_stdstream = print_to_stdstream


def small_blocks(ds, rows: int, cpus: float):
    """``ds`` cut into blocks of at most ``rows`` rows as it streams, in order, by one task at a time
    reserving ``cpus`` CPUs.

    ``Dataset.repartition(target_num_rows_per_block=)`` streams, but its tasks reserve a whole CPU and
    take no resource arguments: on a machine whose CPUs the Train workers and decoder actors already
    hold, they would wait forever. Its logical operator carries the task options the planner uses.
    One task at a time keeps the input blocks' order (several would interleave them).
    """
    import ray.data

    out = ds.repartition(target_num_rows_per_block=rows)
    op = out._logical_plan.dag
    if not isinstance(getattr(op, "ray_remote_args", None), dict) or not hasattr(op, "compute"):
        raise RuntimeError("this Ray's streaming repartition takes no task options: vidpeft needs updating "
                           "(pipelines/ray_compat.small_blocks)")
    op.ray_remote_args["num_cpus"] = cpus
    object.__setattr__(op, "compute", ray.data.TaskPoolStrategy(size=1))
    return out
