"""Joining or starting Ray, sized so Train workers never starve the data pipeline."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from pipelines.runtime.phase_log import mark

LOG_LEVEL_ENV = "VIDPEFT_LOG_LEVEL"  # quiet | info | verbose, set by the CLI's --quiet / --verbose
LOOPBACK_GCS_ENV = "VIDPEFT_LOOPBACK_GCS"  # the GCS address of a loopback-only instance this process started
LOOPBACK_WORKER_ENV = "VIDPEFT_LOOPBACK_WORKER_ENV"  # JSON: the environment that instance's workers inherit
PRESTART_WORKERS = 2  # worker processes asked for at once for a run's first actors (the raylet starts 1 per CPU)
NAME_OWN_INSTANCE = f"{__name__}.name_own_instance"  # every worker of a run's job runs it first
NO_WARM_ENV = "VIDPEFT_NO_WARM_RAY"  # set: never attach to the warm instance (`vidpeft ray up`); start a new one


def log_level() -> str:
    """quiet | info | verbose: this process's (and its Ray workers') verbosity."""
    return os.environ.get(LOG_LEVEL_ENV, "info")


def verbose() -> bool:
    return log_level() == "verbose"


def quiet_ray_data() -> None:
    """Ray Data's "Starting execution of Dataset ..." / "Execution plan ..." lines and progress bars
    off unless verbose. Datasets copy the driver's DataContext when built, so call this first."""
    import ray.data

    ray.data.DataContext.get_current().print_on_execution_start = verbose()


def _data_logging_env(console: str = "ERROR") -> dict[str, str]:
    """Ray Data's logging config with its console at ``console`` (ERROR: the per-dataset "execution finished"
    lines and its notices about settings vidpeft chose, such as "Progress bars disabled", off; its log
    files keep everything; "default": Ray Data's own), for the processes Ray Data runs in."""
    import tempfile

    import yaml

    from pipelines.runtime.ray_compat import ray_data_logging_defaults

    defaults = ray_data_logging_defaults()
    config = {**defaults, "handlers": {**defaults["handlers"]}}
    if console != "default":
        config["handlers"]["console"] = {**config["handlers"]["console"], "level": console}
    path = Path(tempfile.gettempdir()) / f"vidpeft-ray-data-logging-{console.lower()}.yaml"
    part = path.with_name(f"{path.name}.{os.getpid()}")  # whole or not at all: another run may be reading it
    part.write_text(yaml.safe_dump(config))
    os.replace(part, path)
    return {"RAY_DATA_LOGGING_CONFIG": str(path)}


def train_logging():
    """Ray Train's own INFO lines (worker group start, process group, each checkpoint and report)
    only with --verbose."""
    import ray.train

    return ray.train.LoggingConfig(log_level="INFO" if verbose() else "WARNING")


def quiet_train_worker(level: str) -> None:
    """In a Ray Train worker, unless ``level`` is verbose: the root logger back to WARNING. Ray Train
    (2.60) configures the worker's root logger at INFO with a console handler, so every library's INFO
    line reaches the driver: Train's own "Reporting training result ..." (its logger is named after its
    file, ray/train/v2/_internal/execution/context.py, so ``LoggingConfig``'s ray.train filter misses
    it) and open_clip's model-creation lines. The training loop prints its own progress lines."""
    if level != "verbose":
        logging.getLogger().setLevel(logging.WARNING)


# Ray's own false alarms that reach the console on every run; --verbose shows them. Ray Data's actor
# pools (and Train's PreemptionWatcher) trip a core-worker check meant for large constructor
# arguments with any argument at all: https://github.com/ray-project/ray/issues/57733
# The raylet warns once 4x its CPU count of worker processes are alive; on a 2-core machine a run
# has 8 by design (Train's controller and worker, decoder actors, Ray Data's coordinators, the
# 0-CPU stream-cutting task that keeps the stream flowing when the CPUs are held).
_KNOWN_FALSE_ALARMS = ("has constructor arguments in the object store and max_restarts > 0",
                       "the maximum expected startup concurrency")


# The first line of a dump a Ray process prints as it is stopped mid-way, at the end of a run: Ray Data's split
# coordinator ended while its executor's iterator is collected ("Exception ignored in: ... SystemExit: 1"), a
# decoder actor still starting when its owner is stopped (a native check failure and its stack). Nothing of
# the run is lost; its log files keep them.
_DYING_DUMPS = ("Exception ignored in: <function _ClosingIterator.__del__",
                "Check failed: raylet_ipc_client_->ActorCreationTaskDone()")


def _false_alarm(line: str) -> bool:
    return any(text in line for text in _KNOWN_FALSE_ALARMS)


# Ray's workers: no DeprecationWarnings about Ray's own internals (Ray Data's DatasetManager warns about
# options it sets itself) and no C++ warnings from torch's DDP reducer (find_unused_parameters is on by
# design: adapters of an absent modality get no gradient); --verbose shows them
QUIET_WORKERS = {"PYTHONWARNINGS": "ignore::DeprecationWarning", "TORCH_CPP_LOG_LEVEL": "ERROR"}


def _loud_env(inherited: dict[str, str]) -> dict[str, str]:
    """Values that undo a quiet instance's worker environment (``inherited``) for one job's workers: Python's
    and torch's own warning defaults, and Ray Data's own logging config (its console at its default level)."""
    loud = {}
    if "PYTHONWARNINGS" in inherited:
        loud["PYTHONWARNINGS"] = ""  # empty is unset for Python: its default filters
    if "TORCH_CPP_LOG_LEVEL" in inherited:
        loud["TORCH_CPP_LOG_LEVEL"] = "WARNING"  # c10's default
    if "RAY_DATA_LOGGING_CONFIG" in inherited:
        loud.update(_data_logging_env(console="default"))
    return loud


def ensure_ray(address: str = "", num_cpus: int = 0) -> None:
    """Reuse a running Ray (tests share one), join ``address``/RAY_ADDRESS, attach to the warm local
    instance (`vidpeft ray up`), or start a local one that listens on 127.0.0.1 only (``num_cpus``:
    0 = every core). Ray's own start-up messages show only with --verbose."""
    import ray

    from pipelines.runtime.ray_compat import drop_forwarded_lines, keep_local_node_on_loopback, reconfigure_ray_data_logging

    mark("ray_init")
    quiet_ray_data()
    if not sys.stdout.isatty():  # a log file or a pipe: Ray's "(worker pid=...)" prefixes without colour codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    if not address and not os.environ.get(NO_WARM_ENV):
        from pipelines.runtime import warm_ray

        warm = warm_ray.attach_env()  # the CLI called it before Ray was imported; a no-op then
        if warm:  # joined as its own children join it: a node of the same loopback-only kind
            address = os.environ[LOOPBACK_GCS_ENV] = warm["address"]
            if warm.get("worker_env") is not None:
                os.environ[LOOPBACK_WORKER_ENV] = json.dumps(warm["worker_env"], sort_keys=True)
            if log_level() != "quiet":
                print(f"[vidpeft] using the warm local Ray at {address} (`vidpeft ray down` stops it)", flush=True)
    quiet, worker_env = {}, {}
    if not verbose():
        env = _data_logging_env()
        os.environ.update(env)  # the driver's own Ray Data logger (predict and zeroshot execute on the driver)
        reconfigure_ray_data_logging()  # `import ray.data` above already read its logging config
        worker_env = {**env, **QUIET_WORKERS}
        quiet = {"logging_level": logging.WARNING}
    if address:
        local = address == os.environ.get(LOOPBACK_GCS_ENV)
        runtime_env = {"worker_process_setup_hook": NAME_OWN_INSTANCE}
        if local:  # the loopback-only instance a parent vidpeft (or `vidpeft ray up`) started:
            keep_local_node_on_loopback()  # join it as a node of the same kind (its raylet is on 127.0.0.1)
            # its workers already have this environment (_start_local): a job without a runtime env starts
            # each worker process directly, not through Ray's setup_worker (a second Python start)
            inherited = inherited_worker_env()
            if inherited == worker_env:
                runtime_env = None
            else:  # a --verbose run on a quiet instance: its job's workers undo what they would inherit
                runtime_env = {**runtime_env, "env_vars": {**_loud_env(inherited or {}), **worker_env}}
        elif worker_env:  # a cluster's nodes may not see a local file (Ray Data's logging config): they keep Ray
            # Data's own logging. A variable the driver has (the user's, or a submitted job's env_vars, which Ray
            # refuses to merge with the same key from ray.init) stays as it is.
            mine = {k: v for k, v in QUIET_WORKERS.items() if k not in os.environ}
            if mine:
                runtime_env["env_vars"] = mine
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env, **quiet)
    else:
        _start_local(quiet, worker_env, num_cpus)
        os.environ[LOOPBACK_GCS_ENV] = ray.get_runtime_context().gcs_address  # for child processes that join it
    if not verbose():
        drop_forwarded_lines(_false_alarm, _DYING_DUMPS)
    mark("ray_ready")


def attach_early(prestart: int = PRESTART_WORKERS) -> str:
    """A run's first step, when a warm local instance is up (`vidpeft ray up`, or RAY_ADDRESS naming the loopback
    instance a parent vidpeft started): attach now, before this process imports torch, timm and the pipeline
    and checks the config (about 5 s of one core), and have the raylet start ``prestart`` worker processes for
    the run's first actors on the other core meanwhile. Attaching costs about 0.3 s; a run that has to start
    its own Ray (or joins a cluster) does not come here: it checks its config first, so a mistake costs no
    Ray start. Returns the address attached ('' = none); the caller lets go of it when the config names
    another instance (``scaling.ray_address``)."""
    address = os.environ.get("RAY_ADDRESS", "")
    if address:
        if address != os.environ.get(LOOPBACK_GCS_ENV):
            return ""  # a cluster, or an address vidpeft did not start: joined after the config is checked
    elif os.environ.get(NO_WARM_ENV):
        return ""
    else:
        from pipelines.runtime import warm_ray

        warm = warm_ray.find()
        if not warm:
            return ""
        address = warm["address"]
    ensure_ray()
    from pipelines.runtime.ray_compat import prestart_workers

    prestart_workers(prestart)
    return address


def name_own_instance() -> None:
    """Runs in every Ray worker process of a vidpeft run's job on a cluster it joins (a runtime-env setup hook;
    a local instance's workers inherit the name): the worker names its own instance in RAY_ADDRESS. Ray
    Train's placement-group cleaner looks the cluster up without an address, which fails when a second Ray
    instance runs on the same machine ("Found multiple active Ray instances"): its watch thread dies, and
    when the run's driver is then killed, nothing removes the run's placement group; a resumed run waited
    for those CPUs forever."""
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def _start_local(quiet: dict, worker_env: dict[str, str], num_cpus: int = 0) -> None:
    import ray

    from pipelines.runtime.ray_compat import keep_idle_workers, keep_local_node_on_loopback

    # Local: every Ray server (GCS, raylet, workers, agents, the dashboard that Ray's State API and
    # Train's placement-group clean-up need) listens on loopback only. Token authentication stays
    # Ray's default (on); its one-line notice about that default shows only with --verbose. Idle workers of the
    # running job are kept: Ray's idle exit sometimes aborts with a dump on the console (ray_compat.keep_idle_workers).
    keep_local_node_on_loopback()
    if not verbose():
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # The workers' environment goes into the raylet's, which every worker process inherits, instead of a
    # runtime env: Ray starts each worker of a job that has one through its setup_worker script (a second
    # Python start, about 0.4 s per worker process on 2 cores, and a run starts 6-10). RAY_ADDRESS names
    # this instance to its workers (Ray Train's placement-group cleaner looks the cluster up without an
    # address; with a second instance on the machine it failed and a killed driver's placement group
    # stayed), so the GCS port is chosen here; address="local" starts an instance whatever RAY_ADDRESS says.
    port = free_loopback_port()
    with scoped_environ({**worker_env, "RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_GCS_SERVER_PORT": str(port)}):
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=True,
                 dashboard_host="127.0.0.1", log_to_driver=True, _system_config=keep_idle_workers(), **quiet)
    os.environ[LOOPBACK_WORKER_ENV] = json.dumps(worker_env, sort_keys=True)  # for processes that join it


def inherited_worker_env() -> dict | None:
    """The environment the workers of this process's loopback instance inherit (None: not known)."""
    try:
        return json.loads(os.environ[LOOPBACK_WORKER_ENV])
    except (KeyError, ValueError):
        return None


def free_loopback_port() -> int:
    """A port nothing on 127.0.0.1 listens on now, below the kernel's ephemeral range and above Ray's worker
    ports (10002-19999): a port the kernel handed out with bind(0) is the kind it hands to the next process
    that binds port 0 too (a Ray instance starting beside this one binds dozens), so one could take a chosen
    GCS port before the GCS bound it, and ray.init then failed after 40 s."""
    low, high = 20000, min(32768, ephemeral_ports()[0])
    rng = random.Random()  # not the seeded global one: two runs seeded alike would draw the same ports
    for _ in range(200):
        port = rng.randrange(low, high) if high > low else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError(f"no free port on 127.0.0.1 in {low}-{high - 1} after 200 tries")


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for bind(0) (Linux's; its default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


@contextmanager
def scoped_environ(values: dict[str, str]):
    """``values`` in os.environ for the block (what a process started in it inherits), then as before."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def on_loopback() -> bool:
    """Every node of the connected Ray instance is on this machine's loopback address (a local instance
    vidpeft started): Train workers then keep their process group on 127.0.0.1 too."""
    import ipaddress

    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return bool(nodes) and all(ipaddress.ip_address(n["NodeManagerAddress"]).is_loopback for n in nodes)


def torch_config():
    """``TorchTrainer(torch_config=...)``: the process group on loopback for a local instance, else Ray's."""
    from pipelines.runtime.ray_compat import loopback_torch_config

    return loopback_torch_config() if on_loopback() else None


def use_gpu(setting: bool | str) -> bool:
    """auto: only when the cluster actually offers GPUs."""
    if isinstance(setting, bool):
        return setting
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
