"""``scaling.in_process``: the training loop runs in the driver's own process, not in a Ray Train worker.

A Train run on a local instance spends about 10 s more before its first step on Ray Train's machinery (the
controller actor, the placement group, the worker process importing torch): measured by
benchmarks/fixed_cost.py, docs/fixed_cost.md. With one worker on a local instance none of it buys anything,
so ``InProcessTrainer`` runs the same ``train_loop_per_worker`` here, the way Ray Train's local mode does, with
what that mode leaves out:

- each reported checkpoint is persisted to the run folder (``scaling.storage_path``/name) by Ray's own
  storage context and checkpoint manager (pipelines/runtime/ray_compat.py: ``RunCheckpoints``), so the
  best-epoch selection, ``--resume`` and a later Train run read it as any Train run's folder;
- the datasets are split as Ray Train splits them for one worker (``streaming_split(1, equal=True)``): the
  loop sees the same iterator, and one stream serves every epoch.

Ray Data still decodes in its actors; the model and the optimizer live in this process. No worker restarts
(a local instance allows none: scaling.max_failures).

A Tune trial (`vidpeft tune`, `vidpeft ablate`) trains in its own process the same way: the trial reserves the
worker's CPUs (pipelines/search/tune.py: ``TrialJob.resources``), the run's Train callbacks (the trial's
reporter to Tune, its per-epoch results) are called here after each persisted report, as Ray Train's
controller would call them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager


def why_not(scaling, local: bool) -> str:
    """Why a run with these ``scaling`` settings cannot train in its driver's process ('' if it can)."""
    return ("this Ray instance has nodes off this machine (a cluster)" if not local else
            f"scaling.num_workers is {scaling.num_workers}" if scaling.num_workers != 1 else
            f"scaling.max_failures={scaling.max_failures} restarts lost workers" if scaling.failures_allowed(False)
            else "")


def decide(scaling, local: bool, gpu_why: str = "") -> bool:
    """scaling.in_process resolved: auto = when it can (``why_not``, and no ``gpu_why``); ``true`` where it
    cannot be is an error that says why (a cluster's driver may sit on a node without the run's resources; a
    lost worker cannot be restarted here)."""
    from components.config import ConfigError

    if scaling.in_process is False:
        return False
    why = why_not(scaling, local) or gpu_why
    if why and scaling.in_process is True:
        raise ConfigError(f"scaling.in_process: {why}: set scaling.in_process to auto or false to train in Ray "
                          f"Train workers")
    return not why


def scores_here(scaling, workers: int, local: bool, use_gpu: bool) -> bool:
    """``evaluate`` and ``predict`` with one model worker on a local instance run the model in this process, as
    a run trains here: a Ray task or actor for it would start a process that imports torch and builds the model
    again (several seconds of a small machine's command) to do what this process can. Ray Data still decodes in
    its actors. ``scaling.in_process: false`` keeps the model in Ray (as it keeps training in Train workers); a
    GPU the process sees but the run does not ask for (or the reverse) keeps it there too."""
    return scaling.in_process is not False and workers == 1 and local and not gpu_mismatch(use_gpu)


@contextmanager
def threads_as_a_worker(cpus: float):
    """This process's torch threads set, for the block, to what Ray gives a worker, task or actor of ``cpus``
    CPUs (OMP_NUM_THREADS, at least 1), and put back after: the loop, an evaluation or a model that runs here
    instead (a campaign or a notebook goes on in this process). scaling.torch_threads, when set, is applied
    inside by the code that runs, as in a worker."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gpu_mismatch(use_gpu: bool) -> str:
    """Why this process cannot train as ``scaling.use_gpu`` asks ('' if it can): in local mode Ray Train puts
    the loop on this process's first CUDA device whenever it sees one."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda and not use_gpu:
        return "scaling.use_gpu is false and this process sees a GPU (the loop here would take it)"
    if use_gpu and not cuda:
        return "scaling.use_gpu is true and this process sees no GPU"
    return ""


class InProcessTrainer:
    """``fit()`` as ``TorchTrainer.fit()`` returns it: a ``ray.train.Result`` of the run folder's checkpoints."""

    def __init__(self, train_fn: Callable[[dict], None], config: dict, datasets: dict, storage_path: str,
                 name: str, checkpoint_config, threads: int = 1, callbacks: list | None = None,
                 train_log_level: int | str = logging.WARNING) -> None:
        self.train_fn, self.config, self.datasets, self.threads = train_fn, config, datasets, threads
        self.callbacks = callbacks or []  # Ray Train UserCallbacks: after_report(run_context, metrics, checkpoint)
        self.storage_path, self.name, self.checkpoint_config = storage_path, name, checkpoint_config
        self.train_log_level = train_log_level  # Ray Train's own lines, as its LoggingConfig sets them in a worker

    def fit(self):
        from ray.train import Result

        from pipelines.runtime.ray_compat import (RunCheckpoints, clear_in_process_train_utils,
                                                  set_in_process_train_utils, stop_split_coordinators,
                                                  train_functions_in_this_thread)

        run = RunCheckpoints(self.storage_path, self.name, self.checkpoint_config)

        def on_report(metrics: dict, checkpoint):  # in this process every report is rank 0's
            persisted = run.add(metrics, checkpoint) if checkpoint is not None else None
            for callback in self.callbacks:  # as Ray Train's controller calls them: each worker's metrics, persisted
                callback.after_report(run_context=None, metrics=[metrics], checkpoint=persisted)
            return persisted

        # one worker's shard of each dataset, as Ray Train's DataConfig makes it (a factory is built now)
        shards = {key: (ds() if callable(ds) else ds).streaming_split(1, equal=True)[0]
                  for key, ds in self.datasets.items()}
        set_in_process_train_utils(self.name, shards, on_report)
        # what the loop sets for a worker process is put back for this one (a notebook calling vidpeft.train)
        train_logger = logging.getLogger("ray.train")  # its "Moving model to device", "Checkpoint ... created"
        root_level, train_level = logging.getLogger().level, train_logger.level
        train_logger.setLevel(self.train_log_level)
        try:  # a Tune trial's thread: ray.train.* as in a worker
            with threads_as_a_worker(self.threads), train_functions_in_this_thread():
                self.train_fn(self.config)
        finally:
            logging.getLogger().setLevel(root_level)
            train_logger.setLevel(train_level)
            clear_in_process_train_utils()
            stop_split_coordinators(shards.values())
            run.close()
        # as Ray Train's controller hands it over: the manager's own record (a NaN metric stays NaN, which its
        # JSON snapshot would not keep)
        latest, best = run.manager.latest_checkpoint_result, run.manager.best_checkpoint_results
        return Result(metrics=latest.metrics if latest else None, checkpoint=latest.checkpoint if latest else None,
                      error=None, path=f"{self.storage_path.rstrip('/')}/{self.name}",
                      best_checkpoints=[(r.checkpoint, r.metrics) for r in best])
