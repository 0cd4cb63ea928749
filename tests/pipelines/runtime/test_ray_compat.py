"""The private Ray names in pipelines/runtime/ray_compat.py still exist where Ray kept them (fails when Ray moves them)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest


def test_private_ray_names_are_where_ray_compat_expects_them():
    from ray.train.v2._internal.execution.worker_group.state import WorkerGroupState
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup

    from pipelines.runtime import ray_compat

    assert inspect.isclass(ray_compat.WorkerGroupCallback)
    assert callable(getattr(ray_compat.WorkerGroupCallback, "after_worker_group_start", None))
    assert hasattr(ray_compat.PlacementGroupID, "from_hex")
    # what worker_group_placement_group_id walks through
    assert callable(getattr(WorkerGroup, "get_worker_group_state", None))
    assert "placement_group_handle" in {f.name for f in dataclasses.fields(WorkerGroupState)}
    # the quiet mode's copy of Ray Data's logging config needs its console handler
    assert "console" in ray_compat.ray_data_logging_defaults()["handlers"]


def test_only_ray_compat_imports_private_ray_modules():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    offenders = [str(p.relative_to(root)) for d in ("pipelines", "components", "benchmarks", "deploy")
                 for p in (root / d).rglob("*.py")
                 if p.name != "ray_compat.py" and ("ray._raylet" in p.read_text() or "._internal" in p.read_text())]
    assert offenders == []


def test_private_constant_for_single_machine_mode_exists():
    from ray._private import ray_constants, services

    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)
    # what the constant switches: the node address Ray picks when nobody names one
    assert "ENABLE_RAY_CLUSTER" in inspect.getsource(services.get_node_ip_address)


def _is_loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip)
    return addr.is_loopback or bool(getattr(addr, "ipv4_mapped", None) and addr.ipv4_mapped.is_loopback)


def test_local_ray_listens_on_loopback_only(ray_session):
    """vidpeft's local instance (the one every test shares, started by ensure_ray) exposes no port on
    another interface: GCS, raylet, workers, dashboard, agents and metrics servers all on 127.0.0.1."""
    import os

    import psutil

    gcs_host = ray_session.get_runtime_context().gcs_address.rsplit(":", 1)[0]
    assert _is_loopback(gcs_host), gcs_host
    ray_pids = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [(c.laddr.ip, c.laddr.port, c.pid) for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
    assert len(listening) >= 5, listening  # GCS, raylet (2), dashboard, agents: we found Ray's servers
    exposed = [(ip, port, psutil.Process(pid).name()) for ip, port, pid in listening if not _is_loopback(ip)]
    assert exposed == []


def test_known_false_alarms_forwarded_from_ray_workers_are_not_printed(ray_session, capsys):
    """The driver prints what Ray's workers write; a line that is one of Ray's known false alarms
    (issue 57733, on every Ray Data actor pool) is dropped unless --verbose, the rest still prints."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    alarm = ("[2026-11-30 09:41:00,393 E 1 2] core_worker.cc:2465: Actor with class name: 'MapWorker' and ID: 'x' "
             "has constructor arguments in the object store and max_restarts > 0. If the arguments ...")
    handlers = dict(dispatcher.handlers)
    assert "ray_print_logs" in handlers  # where Ray prints forwarded lines (ray_compat wraps it)
    handlers["ray_print_logs"]({"ip": "127.0.0.1", "pid": 4242, "task_name": "SplitCoordinator", "is_err": False,
                                "lines": [alarm, "[vidpeft] epoch 1/1 | train_loss 1.0"], "actor_name": ""})
    # the raylet's warning about worker count, forwarded as "(raylet)": by design on a 2-core machine
    busy = ("WARNING: 8 PYTHON worker processes have been started on node: 87a7 with address: 127.0.0.1, which is "
            "4x the maximum expected startup concurrency (2). This could be a result of using a large number ...")
    import ray._private.worker as ray_worker  # the raylet's error channel prints through this, not the dispatcher

    ray_worker.print_to_stdstream({"pid": "raylet", "is_err": False,
                                   "lines": [busy, "a raylet line that is not a known false alarm"]}, ignore_prefix=False)
    # a process stopped as a run ends, dumping a traceback over several batches: all of it goes, and only it
    coordinator = {"ip": "127.0.0.1", "pid": 4343, "task_name": "SplitCoordinator", "is_err": True, "actor_name": ""}
    handlers["ray_print_logs"]({**coordinator, "lines": ["Exception ignored in: <function _ClosingIterator.__del__ "
                                                         "at 0x7f>", "Traceback (most recent call last):"]})
    handlers["ray_print_logs"]({**coordinator, "lines": ["  File \"streaming_executor.py\", line 809", "SystemExit: 1"]})
    handlers["ray_print_logs"]({**coordinator, "pid": 4444, "lines": ["another process's own line"]})
    out = capsys.readouterr()
    printed = out.out + out.err
    assert "_ClosingIterator" not in printed and "SystemExit" not in printed and "line 809" not in printed
    assert "another process's own line" in printed
    assert "[vidpeft] epoch 1/1" in printed and "constructor arguments" not in printed
    assert "not a known false alarm" in printed and "startup concurrency" not in printed
    assert "\x1b[" not in printed  # not a terminal: Ray's prefixes carry no colour codes


def test_workers_of_a_local_instance_name_it_in_ray_address(ray_session):
    """Ray Train's placement-group cleaner looks its cluster up without an address; with a second Ray
    instance on the machine that lookup fails (a traceback on the console, no clean-up) unless the
    worker's RAY_ADDRESS names its own instance."""
    import os

    @ray_session.remote(num_cpus=0)
    def address() -> str | None:
        return os.environ.get("RAY_ADDRESS")

    assert ray_session.get(address.remote()) == ray_session.get_runtime_context().gcs_address


def test_streaming_repartition_still_takes_task_options_on_its_logical_operator(ray_session):
    """pipelines/ray_compat.small_blocks sets the cutting tasks' CPUs and concurrency there."""
    import ray.data

    from pipelines.runtime.ray_compat import small_blocks

    import pyarrow as pa

    ds = small_blocks(ray.data.from_arrow(pa.table({"x": list(range(20))})), 8, cpus=0.0)
    op = ds._logical_plan.dag
    assert op.ray_remote_args == {"num_cpus": 0.0} and op.compute.size == 1
    assert [len(b["x"]) for b in ds.iter_batches(batch_size=None)] == [8, 8, 4]


def _listening_sockets_of_this_process() -> list[tuple[str, int]]:
    """(address, port) of every TCP listener of the calling process (inside a Train worker)."""
    import os

    import psutil

    return [(c.laddr.ip, c.laddr.port) for c in psutil.Process(os.getpid()).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN]


def _record_listeners(config: dict) -> None:
    """A Train worker's loop: after Ray set up the process group, write this worker's listeners down."""
    import json
    import os
    from pathlib import Path

    import ray.train
    import torch.distributed as dist

    dist.barrier()  # every rank connected: the store and gloo's pairs are all up
    rank = ray.train.get_context().get_world_rank()
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(_listening_sockets_of_this_process()))
    dist.barrier()


@pytest.mark.e2e
def test_train_workers_rendezvous_listens_on_loopback_only(ray_session, tmp_path):
    """Two Train workers of a local instance: with vidpeft's torch config (what `vidpeft train` uses on a
    local instance) no worker socket listens beyond 127.0.0.1. The contrast, what Ray's default config does,
    is the test below."""
    import json

    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.runtime.ray_env import on_loopback, torch_config

    assert on_loopback()  # the session's instance is the local, loopback-only one
    config = torch_config()
    assert config is not None
    TorchTrainer(_record_listeners, train_loop_config={"out": str(tmp_path)}, torch_config=config,
                 scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.01}),
                 run_config=ray.train.RunConfig(storage_path=str(tmp_path / "ray"))).fit()
    found = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    assert found[0], found  # rank 0 hosts the store: at least that listener
    exposed = [(rank, ip, port) for rank, socks in found.items() for ip, port in socks if not _is_loopback(ip)]
    assert exposed == [], found


def test_the_default_rendezvous_store_listens_on_every_interface_and_vidpeft_s_on_loopback():
    """What the loopback config guards against, without a Train run (one was 25-50 s of the suite): the store
    rank 0 opens for torch's env:// rendezvous, as Ray's default torch config has it opened, listens on every
    interface whatever MASTER_ADDR says; the one vidpeft opens (``_open_loopback_store``) on 127.0.0.1 only.
    Also shows that the listener check above finds an exposed store."""
    import datetime

    from torch.distributed import TCPStore

    from pipelines.runtime import ray_compat

    before = set(_listening_sockets_of_this_process())
    store = TCPStore("127.0.0.1", 0, 1, True, datetime.timedelta(seconds=30), wait_for_workers=False)
    try:
        default = set(_listening_sockets_of_this_process()) - before
        assert any(port == store.port for _, port in default), default
        assert [ip for ip, port in default if port == store.port and not _is_loopback(ip)], default
    finally:
        del store
    before = set(_listening_sockets_of_this_process())
    port = ray_compat._open_loopback_store(world_size=1, timeout_s=30)
    try:
        ours = [(ip, p) for ip, p in set(_listening_sockets_of_this_process()) - before if p == port]
        assert ours and all(_is_loopback(ip) for ip, _ in ours), ours
    finally:
        store, sock = ray_compat._LOOPBACK_STORE
        ray_compat._LOOPBACK_STORE.clear()
        sock.detach()  # the store owns the listening fd now: it closes it
        del store


def test_run_checkpoints_keep_the_best_and_the_latest_as_ray_train_does(tmp_path):
    """``RunCheckpoints`` (what an in-process run persists with): Ray's checkpoint manager keeps
    ``num_to_keep`` by the score plus the latest, deletes the rest from the folder, and its snapshot makes
    the folder a Train run folder that ``Result.from_path`` (resume, earlier fits' best) reads."""
    import ray.train
    from ray.train import Result

    from pipelines.runtime.ray_compat import RunCheckpoints

    run = RunCheckpoints(str(tmp_path / "ray"), "run-a", ray.train.CheckpointConfig(
        num_to_keep=2, checkpoint_score_attribute="val_top1", checkpoint_score_order="max"))
    for epoch, score in enumerate([0.5, 0.9, 0.7, 0.2]):
        src = tmp_path / f"src{epoch}"
        src.mkdir()
        (src / "state.txt").write_text(str(epoch))
        run.add({"epoch": epoch, "val_top1": score}, ray.train.Checkpoint.from_directory(str(src)))
    run.close()
    kept = [p for p in (tmp_path / "ray" / "run-a").iterdir() if p.is_dir() and p.name.startswith("checkpoint_")]
    assert len(kept) == 3  # the best two (0.9, 0.7) and the latest (0.2)
    read = Result.from_path(str(tmp_path / "ray" / "run-a"))
    assert sorted(m["epoch"] for _, m in read.best_checkpoints) == [1, 2, 3]
    best = read.get_best_checkpoint("val_top1", "max")
    assert (Path(best.path) / "state.txt").read_text() == "1"
    assert read.metrics["epoch"] == 3  # the latest


def test_arrow_dataset_is_from_arrow_without_its_metadata_tasks(ray_session):
    """pipelines/data/ingest.py plans its datasets with ray_compat.arrow_dataset: same rows, counts, schema."""
    import pyarrow as pa
    import ray.data

    from pipelines.runtime.ray_compat import arrow_dataset

    tables = [pa.table({"x": list(range(i, i + 5)), "s": [str(v) for v in range(i, i + 5)]}) for i in (0, 5, 10)]
    ours, ray_own = arrow_dataset(tables), ray.data.from_arrow(tables)
    assert ours.count() == ray_own.count() == 15
    assert ours.schema() == ray_own.schema()
    assert ours.num_blocks() == 3
    assert [r["x"] for r in ours.take_all()] == list(range(15))


def _title(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline()).strip()
    except psutil.Error:
        return ""


def test_prestarted_workers_host_the_next_actors(ray_session):
    """ray_compat.prestart_workers: the raylet starts worker processes for this job at once, and an actor
    created afterwards runs in a process that was already up."""
    import os
    import time

    import psutil
    import ray

    from pipelines.runtime.ray_compat import prestart_workers

    raylet = psutil.Process(ray._private.worker._global_node.all_processes["raylet"][0].process.pid)

    def workers() -> set[int]:  # a worker renames itself "ray::IDLE", "ray::<actor class>", ...
        found = set()
        for p in raylet.children():
            try:
                line = " ".join(p.cmdline())
            except psutil.Error:  # gone meanwhile
                continue
            if "default_worker" in line or (line.startswith("ray::") and "Agent" not in line):
                found.add(p.pid)
        return found

    before = workers()
    for _ in range(6):  # the raylet drops a request while it starts as many workers as it has CPUs: ask again
        assert prestart_workers(1)
        deadline = time.monotonic() + 10
        while not workers() - before and time.monotonic() < deadline:
            time.sleep(0.2)
        if workers() - before:
            break
    up = workers()
    assert up - before, "no worker process was started"
    deadline = time.monotonic() + 60  # the new process is up: registered, waiting for work ("ray::IDLE")
    while time.monotonic() < deadline and not any(_title(pid) == "ray::IDLE" for pid in up - before):
        time.sleep(0.2)

    @ray.remote(num_cpus=0)
    class Where:
        def pid(self) -> int:
            return os.getpid()

    actor = Where.remote()
    assert ray.get(actor.pid.remote(), timeout=60) in up
    ray.kill(actor)


def test_data_services_are_the_ones_ray_data_uses(ray_session):
    """ray_compat.start_data_services (what `vidpeft ray up` calls): the three per-instance actors it asks for
    are the named, detached ones a dataset's execution looks up, so the first run finds them up."""
    import ray

    from pipelines.runtime.ray_compat import start_data_services

    assert start_data_services() == ["get_or_create_stats_actor", "get_or_create_actor_location_tracker",
                                     "get_or_create_autoscaling_coordinator"]
    for name, namespace in (("datasets_stats_actor", "_dataset_stats_actor"),
                            ("ActorLocationTracker", "ActorLocationTracker"),
                            ("AutoscalingCoordinator", "AutoscalingCoordinator")):
        actor = ray.get_actor(name, namespace=namespace)  # raises when Ray names it otherwise
        ray.get(actor.__ray_ready__.remote(), timeout=120)
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    ray.data.range(4).materialize()  # a dataset's execution: no second copy of any of them
    assert {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)} == names
