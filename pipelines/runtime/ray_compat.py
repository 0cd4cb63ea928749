"""Every private Ray name vidpeft uses, in one place (checked against Ray 2.60).

Ray Train V2 has no public hook for "the worker group started", a placement group is freed by
id only through ``ray._raylet``, and a local instance can be kept on loopback only through a
private constant, the lines Ray forwards from its workers to the driver pass one private
dispatcher, and a streaming repartition takes task options only on its logical operator. When
Ray moves one, tests/pipelines/runtime/test_ray_compat.py fails and this is the only file to fix.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

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


# Ray 2.60's workers now and then abort as they exit on the raylet's idle-worker killing: a thread still locks
# an absl::Mutex the exiting core worker has freed ("[mutex.cc] RAW: ... Mutex corrupt: both reader and writer
# lock held" or "waiting writer with no waiters", SIGABRT, "Fatal Python error: Aborted"). The worker had
# finished its tasks long before (results are whole), but its dump is forwarded to the driver's console. In 112 Ray
# sessions on one machine: 4 aborts in 886 idle exits (workers of Ray Data's metadata tasks, and a prestarted
# worker that never ran a task), none in 1,000 other exits (actors killed, user exits).
KEEP_IDLE_WORKERS_MS = 7 * 24 * 3600 * 1000


def keep_idle_workers() -> dict:
    """``ray.init(_system_config=...)`` for a local instance: the raylet leaves a running job's idle workers
    alive (for up to a week) instead of stopping those above its soft limit (one per CPU) after Ray's
    default 10 s, so no worker goes through the exit that sometimes aborts while a command runs. A finished
    job's workers still go at once (a warm instance, `vidpeft ray up`, does not collect them)."""
    return {"idle_worker_killing_time_threshold_ms": KEEP_IDLE_WORKERS_MS}


def drop_forwarded_lines(drop, dying_dumps: tuple[str, ...] = ()) -> None:
    """Lines Ray forwards from its workers' stdout/stderr to this driver for which ``drop(line)`` is
    true are not printed (Ray's log files keep them). A line holding one of ``dying_dumps`` opens the dump
    of a process on its way out (a traceback, a native stack): it and every later line of that process are
    dropped too. Call after ``ray.init``."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    dying: set = set()

    def keep(line: str, pid) -> bool:
        if pid in dying:
            return False
        if any(text in line for text in dying_dumps):
            dying.add(pid)
            return False
        return not drop(line)

    def wrap(handler):
        if getattr(handler, "vidpeft_filter", False):
            return handler

        def handle(batch):
            lines = [line for line in batch.get("lines", []) if keep(line, batch.get("pid"))]
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


def metadata_tasks_take_no_cpu() -> None:
    """``ray.data.from_arrow`` asks a task per table for its metadata (``get_table_block_metadata_schema``)
    and waits for them; each reserves a CPU by default. Called where the CPUs are all held (Ray Train's
    controller building the training stream inside a Tune trial, an evaluation task), those tasks never
    start and the run hangs. The cached remote function Ray Data looks up is replaced by a 0-CPU one
    (it reads a table's schema and row count: no work worth a reservation). Idempotent, per process."""
    from ray.data._internal import remote_fn
    from ray.data._internal.util import get_table_block_metadata_schema

    key = (get_table_block_metadata_schema, hash(remote_fn._make_hashable({})))
    remote_fn.CACHED_FUNCTIONS[key] = remote_fn.cached_remote_fn(get_table_block_metadata_schema, num_cpus=0)


def arrow_dataset(tables: list):
    """``ray.data.from_arrow(tables)`` with each table's metadata and schema read here, as Ray Data's own
    metadata task reads them, instead of in one task per table that the call waits for: on a fresh job the
    first task waits for a new worker process (about a second of every run's start, measured in
    docs/fixed_cost.md), and no CPU reservation is needed (``metadata_tasks_take_no_cpu``)."""
    import ray
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import FromArrow
    from ray.data._internal.stats import DatasetStats
    from ray.data._internal.util import get_table_block_metadata_schema
    from ray.data.context import DataContext
    from ray.data.dataset import MaterializedDataset

    metadata_schema = [get_table_block_metadata_schema(t) for t in tables]
    refs = [ray.put(t) for t in tables]
    context = DataContext.get_current().copy()
    stats = DatasetStats(metadata={"FromArrow": metadata_schema}, parent=None)
    return MaterializedDataset(LogicalPlan(FromArrow(refs, metadata_schema), context), context, stats)


def start_data_services() -> list[str]:
    """Create Ray Data's three per-instance actors now, as the warm instance starts (`vidpeft ray up`), rather
    than in its first run's first dataset: its stats actor, its actor-location tracker and its autoscaling
    coordinator (Ray 2.60: detached, named, one per instance, created by whichever run executes a dataset
    first). Each needs a worker process: on a 2-core machine a fresh instance's first run waited about 3 s
    for them before its decoder actor started. Not for a run that starts its own instance: there they would
    take the process starts its split coordinators need first (measured: 2 s later to the first step).
    Creation is asynchronous (nothing waits here). Returns the names of those it asked for; one Ray has moved
    is skipped (only the start is slower; tests/pipelines/runtime/test_ray_compat.py fails when it moves)."""
    started = []
    for module, name in (("ray.data._internal.stats", "get_or_create_stats_actor"),
                         ("ray.data._internal.execution.node_trackers.actor_location",
                          "get_or_create_actor_location_tracker"),
                         ("ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator",
                          "get_or_create_autoscaling_coordinator")):
        try:
            getattr(importlib.import_module(module), name)()
        except (ImportError, AttributeError):
            continue
        started.append(name)
    return started


def prestart_workers(count: int, keep_alive_s: int = 60) -> bool:
    """Ask this node's raylet to start ``count`` worker processes for this job now (its runtime env), idle
    until an actor or a task of the job needs one. A process's start (Python, ``import ray``, registering) is
    most of an actor's start on a small machine; a run's first actors (Ray Data's split coordinators and the
    decoder pool) then find their processes up. Ray 2.60's raylet has the request (``PrestartWorkers``, which
    Ray itself sends for a backlog of tasks) but no public call; it starts at most its start-up concurrency
    (one per CPU) at once and drops the rest. A worker that never ran a task can host an actor; one that
    ran a task cannot, so tasks cannot do this. A request the raylet does not answer is let go: it only makes
    the start faster (False; tests/pipelines/runtime/test_ray_compat.py fails when Ray moves the request)."""
    import grpc
    import ray
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

    worker = ray._private.worker.global_worker
    node = worker.node
    channel = init_grpc_channel(f"{node.node_ip_address}:{node.node_manager_port}")
    try:
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(
            node_manager_pb2.PrestartWorkersRequest(
                language=common_pb2.PYTHON, job_id=worker.current_job_id.binary(),
                runtime_env_info=worker.core_worker.get_job_config().runtime_env_info,
                keep_alive_duration_secs=keep_alive_s, num_workers=count),
            timeout=5)
        return True
    except grpc.RpcError:
        return False
    finally:
        channel.close()


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


# ---- Train workers' process group on loopback ---------------------------------------------------------------
# Ray Train's torch backend (ray/train/torch/config.py, _TorchBackend.on_start) names worker 0's node address
# as MASTER_ADDR, and rank 0's init_process_group then starts torch's rendezvous store (TCPStore), which
# listens on every interface (::) whatever address it is given; gloo's own sockets bind to the address the
# host name resolves to. On a local instance every worker is on this machine: the store is started first on
# a socket bound to 127.0.0.1 (init_process_group reuses a multi-tenant store of the same port in the same
# process) and gloo is pinned to the loopback interface, so nothing of a local run is reachable from outside.
_LOOPBACK_STORE: list = []  # rank 0's store, kept alive for the life of the worker process


def _open_loopback_store(world_size: int, timeout_s: float) -> int:
    import datetime
    import socket

    from torch.distributed import TCPStore

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    store = TCPStore("127.0.0.1", port, world_size, True, datetime.timedelta(seconds=timeout_s),
                     wait_for_workers=False, multi_tenant=True, master_listen_fd=sock.fileno())
    _LOOPBACK_STORE[:] = [store, sock]
    return port


def _loopback_env(port: int) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME=_loopback_interface(),
                      NCCL_SOCKET_IFNAME=_loopback_interface())


def _loopback_interface() -> str:
    import socket

    for _, name in socket.if_nameindex():
        if name.startswith("lo"):
            return name
    return "lo"


def loopback_torch_config():
    """A ``TorchConfig`` for ``TorchTrainer(torch_config=...)`` whose process group listens on 127.0.0.1 only:
    for a Ray instance whose nodes are all on this machine's loopback address."""
    import ray
    from ray.train.torch.config import (TorchConfig, _set_torch_distributed_env_vars, _setup_torch_process_group,
                                        _TorchBackend)

    class LoopbackTorchBackend(_TorchBackend):
        def on_start(self, worker_group, backend_config) -> None:
            backend = backend_config.backend or (
                "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo")
            n = len(worker_group)
            if n == 1:  # one worker: no peer to meet, so no store and no process group (the loop needs none)
                worker_group.execute(_set_torch_distributed_env_vars)
                return
            port = worker_group.execute_single(0, _open_loopback_store, world_size=n,
                                               timeout_s=backend_config.timeout_s)
            worker_group.execute(_loopback_env, port=port)
            worker_group.execute(_set_torch_distributed_env_vars)
            ray.get([worker_group.execute_single_async(i, _setup_torch_process_group, backend=backend, world_rank=i,
                                                       world_size=n, init_method="env://",
                                                       timeout_s=backend_config.timeout_s) for i in range(n)])

    class LoopbackTorchConfig(TorchConfig):
        @property
        def backend_cls(self):
            return LoopbackTorchBackend

    return LoopbackTorchConfig()


# --- Training in the driver's process (pipelines/run/in_process.py) ---------------------------------------
# Ray Train's local mode (ScalingConfig(num_workers=0)) runs the loop in the calling process, but its report()
# keeps only the last checkpoint in memory. vidpeft's in-process runs persist each one as a Train run does:
# Ray's own storage context and checkpoint manager write the run folder (checkpoints and the manager's
# snapshot), so Result.from_path, --resume and the best-epoch selection read it like any other run.

def set_in_process_train_utils(name: str, shards: dict | None, on_report) -> None:
    """Make ``ray.train.get_context/get_dataset_shard/report/get_checkpoint`` work in this process for a
    loop run here (world size 1); ``on_report(metrics, checkpoint)`` persists what the loop reports."""
    from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils, set_train_fn_utils

    class _Persisting(LocalTrainFnUtils):
        def report(self, metrics, checkpoint=None, *args, **kwargs) -> None:
            self._last_metrics = metrics
            self._last_checkpoint = on_report(metrics, checkpoint) or self._last_checkpoint

    set_train_fn_utils(_Persisting(experiment_name=name, dataset_shards=shards))


def clear_in_process_train_utils() -> None:
    from ray.train.v2._internal.execution.train_fn_utils import set_train_fn_utils

    set_train_fn_utils(None)


class RunCheckpoints:
    """A Train run folder ``storage_path/name`` kept by Ray's storage context and checkpoint manager
    (``num_to_keep`` by the score, the latest always kept), written by this process."""

    def __init__(self, storage_path: str, name: str, checkpoint_config) -> None:
        import asyncio

        from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager
        from ray.train.v2._internal.execution.storage import StorageContext

        self.storage = StorageContext(storage_path=storage_path, experiment_dir_name=name)
        # the manager notifies its listeners through an asyncio task: one loop of its own, run per report
        self._loop = asyncio.new_event_loop()

        async def make():
            return CheckpointManager(checkpoint_config=checkpoint_config, storage_context=self.storage)

        self.manager = self._loop.run_until_complete(make())

    def add(self, metrics: dict, checkpoint):
        """Copy ``checkpoint`` into the run folder and register it; the persisted checkpoint."""
        from ray.train.v2._internal.execution.training_report import _TrainingReport

        persisted = self.storage.persist_current_checkpoint(checkpoint, self.storage.make_default_checkpoint_dir_name())

        async def register():
            self.manager.register_checkpoint(_TrainingReport(checkpoint=persisted, metrics=metrics, validation=False))

        self._loop.run_until_complete(register())
        return persisted

    def close(self) -> None:
        self._loop.close()


@contextmanager
def train_functions_in_this_thread():
    """Inside the block, ``ray.train.report/get_context/get_dataset_shard/get_checkpoint`` and
    ``ray.train.torch.prepare_model/get_device`` work in this thread even when it runs a Tune trial.

    Ray 2.60 refuses those functions in a Tune trial's function (a DeprecationWarning: a trial is to call
    ``ray.tune.report``). A loop run in the trial's own thread (``scaling.in_process``) is a Train worker in
    everything but its process, with its train functions set (``set_in_process_train_utils``), so for this
    thread only the check sees no Tune session; Tune's own thread and ``ray.tune.report`` are unchanged."""
    import threading

    import ray.tune.trainable.trainable_fn_utils as fn_utils

    original, me = fn_utils._in_tune_session, threading.get_ident()

    def in_tune_session() -> bool:
        return False if threading.get_ident() == me else original()

    fn_utils._in_tune_session = in_tune_session
    try:
        yield
    finally:
        fn_utils._in_tune_session = original


def stop_split_coordinators(iterators) -> None:
    """Ray Data's split coordinator behind each ``streaming_split`` iterator, and with it the executor and the
    decoder actors it owns, stopped at once (``ray.kill``). Left to go out of scope, Ray ends it gracefully, and
    the exit cuts into its executor's ``__del__``: an "Exception ignored ... SystemExit: 1" traceback on the
    driver's console. In a Tune trial whose process runs the next trial, it also frees the decoders' CPUs now."""
    import ray

    for it in iterators:
        coordinator = getattr(it, "_coord_actor", None)
        if coordinator is not None:
            ray.kill(coordinator)
