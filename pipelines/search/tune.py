"""`vidpeft tune`: a Ray Tune search whose trials are whole `vidpeft train` runs, nested in one MLflow run.

Steps: 1) resolve the base config, load the search space and check every key against the config,
2) open (or reopen) the search's MLflow parent run, 3) run the Tuner, new or restored from the search
dir; each trial is a driver (``trial_driver``) that calls ``run_train`` with a Tune reporter among its
Train callbacks, 4) close the MLflow runs of trials the scheduler stopped, write best.yaml (a config
`vidpeft train` takes as is), best.json and trials.csv, and log them to the parent run.

The trial machinery (``TrialJob``, ``trial_driver``, ``run_trials``) is shared with `vidpeft ablate`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.result import AUTO_RESULT_KEYS

from components.config import ConfigError, dump_yaml, from_dict, resolve, to_dict
from pipelines.runtime import ray_env, tracking
from pipelines.config import ExperimentConfig
from pipelines.run.config_identity import config_identity
from pipelines.search.space import SearchSpace, apply_params, check_space_models, load_space, validate
from pipelines.search.trial_callbacks import (EPOCHS_DONE, TRAIN_PG, EpochReporter, NotePlacementGroup, TrialEnds,  # noqa: F401
                                       release_placement_group)

# A trial's driver only waits on its Train run: a whole CPU each would starve the Train workers
# (WorkerGroupStartupTimeoutError on small machines), and Ray rejects 0.
TRIAL_CPU = 0.01
# A finished trial's process runs the next trial with the same resources (Tune's reuse_actors): its torch,
# timm, Ray Data and pipeline imports are already done, which is most of a short trial's start (a tiny campaign
# cell: about 6 s of 15). Each run puts back what it changes in its process (pipelines/run/in_process.py); a
# trial whose thread is still busy (stopped by the scheduler mid-epoch) is not reused: Tune starts a new one.
REUSE_ENV = "VIDPEFT_REUSE_TRIALS"  # 0: a new process per trial


def reuse_trials() -> bool:
    """VIDPEFT_REUSE_TRIALS: 1 (default) or 0; any other value is refused in one line naming it."""
    value = os.environ.get(REUSE_ENV, "1")
    if value not in ("0", "1"):
        raise ConfigError(f"{REUSE_ENV}={value!r}: expected 1 (reuse a finished trial's process) or 0 (a new one)")
    return value == "1"


TRIAL_TAG = "vidpeft.trial_id"
CELL_KEY_TAG = "vidpeft.cell_key"
# Config fields holding local paths: made absolute before trials start, because trials may run in
# another working directory (Tune moves them into their trial dirs).
PATH_KEYS = ("manifest", "checkpoint", "init_from", "storage_path")


def absolute_paths(data: Any) -> Any:
    """Plain config data with every local path field (PATH_KEYS) made absolute; URIs untouched."""
    if isinstance(data, list):
        return [absolute_paths(v) for v in data]
    if not isinstance(data, dict):
        return data
    out = {}
    for k, v in data.items():
        if k in PATH_KEYS and isinstance(v, str) and v and "://" not in v:
            out[k] = str(Path(v).expanduser().absolute())
        else:
            out[k] = absolute_paths(v)
    return out


def for_training(data: dict, name: str) -> dict:
    """A config a plain `vidpeft train` run accepts as is: own name, default output dir, not nested."""
    data = copy.deepcopy(data)
    data.update(name=name, output_dir="")
    data["tracking"].update(parent_run_id="", tags={}, run_name="")
    return data


@dataclass
class TrialJob:
    """What every trial of one search or campaign shares (handed to trials through the object store)."""

    label: str  # search/campaign name (trial run names)
    trials_dir: str  # search: trial output dirs are trials_dir/<trial_id>
    tracking_uri: str  # resolved once by the CLI process (trials may not see its env/cwd)
    parent_run_id: str
    base: dict | None = None  # search: resolved base config as plain data, paths absolute
    space: SearchSpace | None = None  # search: the space whose samples a trial receives
    cells: dict[str, dict] | None = None  # campaign: cell name -> complete config data

    def resources(self, sampled: dict):
        """What a trial reserves (Tune calls this per trial): its driver's share of a CPU, plus, when it trains
        in its own process, the Train worker's CPUs (and GPU) it stands in for."""
        from ray.tune.execution.placement_groups import PlacementGroupFactory

        cfg = self.config_for(sampled, "")
        if not trains_in_process(cfg):
            return PlacementGroupFactory([{"CPU": TRIAL_CPU}])
        gpu = {"GPU": 1} if ray_env.use_gpu(cfg.scaling.use_gpu) else {}
        return PlacementGroupFactory([{"CPU": TRIAL_CPU + cfg.scaling.cpus_per_worker, **gpu}])

    def config_for(self, sampled: dict, trial_id: str) -> ExperimentConfig:
        if self.cells is not None:
            data = copy.deepcopy(self.cells[sampled["cell"]])
        else:
            data = apply_params(self.base, self.space.decode(sampled))
            # a unique name: on shared storage (scaling.storage_path) each run's checkpoints go under it
            data.update(name=f"{self.label}-{trial_id}", output_dir=str(Path(self.trials_dir) / trial_id))
            data["tracking"].update(tracking_uri=self.tracking_uri, parent_run_id=self.parent_run_id,
                                    run_name=data["name"])
        data["tracking"]["tags"] = {**data["tracking"]["tags"], TRIAL_TAG: trial_id}
        return from_dict(ExperimentConfig, data)


def trains_in_process(cfg: ExperimentConfig) -> bool:
    """A trial trains in its own process (scaling.in_process) rather than in a Train worker: one worker on a
    local instance, no worker restarts. Decided the same way where Tune reserves the trial's resources and in
    the trial itself."""
    from pipelines.run.in_process import decide

    return decide(cfg.scaling, ray_env.on_loopback())


def check_in_process(cfgs, where: str) -> None:
    """scaling.in_process true where a trial cannot honour it: one line before any trial starts."""
    for cfg in cfgs:
        try:
            trains_in_process(cfg)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


def trial_driver(config: dict, job: TrialJob) -> None:
    """One Tune trial: a `vidpeft train` run (resumed from its own checkpoints if the trial restarts)."""
    import ray.tune

    from pipelines.run.train import run_train

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = job.config_for(config, trial_id)
    from pipelines.run.best import checkpoint_metric
    from pipelines.search.trial_results import KeepEpochResults

    keep = KeepEpochResults(cfg.output_dir, *checkpoint_metric(cfg), cfg.optim.epochs)  # kept if ASHA stops it
    here = trains_in_process(cfg)
    reporter = EpochReporter(cfg.optim.epochs - 1, in_process=here)
    callbacks = [keep, reporter, *([] if here else [NotePlacementGroup()])]
    final = run_train(cfg, resume=True, callbacks=callbacks, in_process=here)
    reporter.wait()  # the epochs' results before the final one
    key = cfg.tracking.tags.get(CELL_KEY_TAG)
    if key:  # a campaign cell: its key in metrics.json marks it finished for later reruns
        path = Path(final["output_dir"]) / "metrics.json"
        stamped = {**json.loads(path.read_text()), "cell_key": key}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(stamped, indent=2, default=str))
        tmp.replace(path)
    report = {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool))}
    # [after] metrics.json holds the best epoch's metrics; epochs done counts to the last epoch trained
    done = final.get("last_epoch", final.get("epoch", cfg.optim.epochs - 1))
    ray.tune.report({**report, EPOCHS_DONE: (cfg.optim.epochs - 1 if done is None else done) + 1})


def trial_cpus(cfg: ExperimentConfig) -> float:
    """CPUs one trial holds at once: its driver, its Train workers and its decoder actors (auto: one counted,
    the trial's pool grows into CPUs left free)."""
    s, d = cfg.scaling, cfg.data
    actors = 1 if d.decode_actors == "auto" else d.decode_actors
    return TRIAL_CPU + s.num_workers * s.cpus_per_worker + actors * d.decode_cpus


def fit_concurrency(requested: int, per_trial: float) -> int:
    """Concurrent trials the cluster can hold whole. More would each get Train workers but leave no
    CPU for their data pipelines: every trial would wait on data forever."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    fits = int(total // per_trial)
    if fits < 1:
        print(f"[vidpeft] warning: one trial needs {per_trial:.2f} CPUs and the cluster has {total:.0f}: "
              "trials will wait for resources", flush=True)
        return 1
    if requested > fits:
        print(f"[vidpeft] max concurrent trials lowered from {requested} to {fits}: each needs "
              f"{per_trial:.2f} of the cluster's {total:.0f} CPUs", flush=True)
        return fits
    return max(requested, 1)


def trial_dirname(trial) -> str:
    return trial.trial_id  # so a result's path names its trial, even when it never reported


def result_trial_id(result) -> str:
    return Path(result.path).name


def run_trials(job: TrialJob, exp_dir: Path, restore: bool, param_space: dict | None = None, tune_config=None):
    """Run (or restore and continue) the Tuner whose trials are ``trial_driver`` runs.
    Returns (results, ids of the trials that ended; the others were interrupted)."""
    from ray import tune

    record = exp_dir.with_name(exp_dir.name + ".ended.json")
    # Tune's per-trial CSV and JSON logs, but not its TensorBoard writer, which it adds whenever
    # tensorboardX is importable and which prints a `tensorboard --logdir` hint: runs are tracked in MLflow
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    if not ray_env.verbose():  # Tune's newer reporter prints its heading box even at verbose=0; the older is silent
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    trainable = tune.with_resources(tune.with_parameters(trial_driver, job=job), job.resources)
    if restore:
        print(f"[vidpeft] resuming the search in {exp_dir}", flush=True)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                           # Tune's own status tables and per-trial result boxes only with --verbose: the
                           # trials' epoch lines, TrialEnds' line per trial and the closing summary say it
                           run_config=tune.RunConfig(name=exp_dir.name, storage_path=str(exp_dir.parent),
                                                     verbose=None if ray_env.verbose() else 0,
                                                     failure_config=tune.FailureConfig(max_failures=0),
                                                     callbacks=[TrialEnds(str(record)), tune.logger.CSVLoggerCallback(),
                                                                tune.logger.JsonLoggerCallback()]))
    results = tuner.fit()
    for r in results:  # an interrupted trial's Train run was killed too
        release_placement_group(r.metrics.get(TRAIN_PG, ""))
    return results, set(json.loads(record.read_text())) if record.exists() else set()


def close_trial_runs(uri: str, parent_run_id: str, results, ended: set[str]) -> dict[str, str]:
    """Give every nested trial run a final status. A trial the scheduler stopped was killed mid-run
    (its run still says RUNNING, or FAILED if the stop reached it as an exception): KILLED, tagged
    vidpeft.stopped_early; an interrupted one (not in ``ended``): KILLED, its run reopens when the
    search resumes. Returns trial id -> final status."""
    errored = {result_trial_id(r) for r in results if r.error is not None}
    last = {result_trial_id(r): r.metrics or {} for r in results}
    client = tracking.client(uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              max_results=10000)
    status = {}
    for run in runs:
        trial = run.data.tags.get(TRIAL_TAG, "")
        final = run.info.status
        if final != "FINISHED" and trial not in errored:
            if trial in ended:
                client.set_tag(run.info.run_id, "vidpeft.stopped_early", "true")
                log_reported_epoch(uri, run.info.run_id, last.get(trial, {}))
            client.set_terminated(run.info.run_id, status="KILLED")
            final = "KILLED"
        elif final == "RUNNING":
            client.set_terminated(run.info.run_id, status="FAILED")
            final = "FAILED"
        status[trial] = final
    return status


# what Tune and the trial's reporter add to an epoch's metrics: not the run's own
_NOT_EPOCH_METRICS = {*AUTO_RESULT_KEYS, "done", "trial_id", "experiment_tag", TRAIN_PG, EPOCHS_DONE}


def log_reported_epoch(uri: str, run_id: str, result: dict) -> None:
    """A stopped trial's last epoch, as Tune got it, in its MLflow run once. The trial logs each epoch just
    after reporting it, and Tune ends a stopped trial's process without waiting for it: on a loaded machine the
    epoch the scheduler judged was missing from the run."""
    epoch = result.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or "mid_epoch_clips" in result:
        return
    metrics = {k: v for k, v in result.items()
               if k not in _NOT_EPOCH_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    tracking.log_epoch_once(uri, run_id, metrics, epoch)


def max_epochs(cfg: ExperimentConfig, space: SearchSpace) -> int:
    """Longest trial: the config's epochs, or the largest value the space may give optim.epochs."""
    p = space.params.get("optim.epochs")
    return max([cfg.optim.epochs, *(int(v) for v in p.candidates())] if p else [cfg.optim.epochs])


def _spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_search(search: str, space: SearchSpace, where: str) -> None:
    if search not in ("random", "optuna"):
        raise ConfigError(f"--search must be random or optuna, got {search!r}")
    if search == "optuna" and space.has_grid:
        raise ConfigError(f"{where}: grid parameters need --search random (Optuna samples, it does not enumerate)")


def search_alg(search: str, seed: int, max_concurrent: int):
    """Seeded searchers. The random generator takes the concurrency limit itself: Tune ignores
    max_concurrent_trials for it, and unlimited trials on a small machine wait on each other."""
    if search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed))  # limited by max_concurrent_trials


def run_search(config_files: list[str], overrides: list[str], space_file: str, trials: int, *,
               scheduler: str = "asha", search: str = "random", max_concurrent: int = 1, out: str = "",
               resume: bool = False, grace_period: int = 1, reduction_factor: int = 2) -> dict:
    from ray import tune

    from pipelines.runtime.ray_env import ensure_ray

    # 1) the base config and the space, checked against each other before anything starts
    cfg = resolve(ExperimentConfig, config_files, overrides)
    base = absolute_paths(to_dict(cfg))
    space = load_space(space_file)
    validate(space, base, where=str(space_file))
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if scheduler not in ("asha", "fifo"):
        raise ConfigError(f"--scheduler must be asha or fifo, got {scheduler!r}")
    check_search(search, space, str(space_file))
    from pipelines.run.reported_metrics import check_reported

    check_reported(space.metric, cfg, f"{space_file}: metric")  # not found only after a whole trial
    if not any(k == "data" or k.startswith(("data.manifest", "data.datasets")) for k in space.params):
        from pipelines.run.inputs import check_inputs

        # data, model and weights as `vidpeft train` checks them, before Ray starts
        inputs = check_inputs(cfg)
        check_space_models(space, base, str(space_file), inputs.manifest.class_names,
                           inputs.cfg.model.head.num_outputs)
    name = Path(space_file).stem
    search_dir = Path(out or Path("runs") / f"tune-{name}").absolute()
    exp_dir = search_dir / "tune"
    # the base without its defaults: a search started before an upgrade that added config fields resumes
    spec = _spec_hash({"base": config_identity(base), "space": to_dict(space), "trials": trials, "scheduler": scheduler,
                       "search": search, "grace": grace_period, "rf": reduction_factor})
    state_file = search_dir / "search.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    restore = tune.Tuner.can_restore(exp_dir)
    if resume and not restore:
        raise ConfigError(f"--resume: {search_dir} holds no search to resume")
    if restore and state.get("spec") != spec:
        raise ConfigError(f"{search_dir} holds a different search (space, configs or options changed): "
                          "choose another --out, or delete that folder to start over")

    ensure_ray(cfg.scaling.ray_address)
    check_in_process([cfg], str(space_file))
    concurrency = fit_concurrency(max_concurrent, trial_cpus(cfg))

    # 2) the parent run: created once, reopened when the search resumes
    uri = tracking.resolve_tracking_uri(cfg.tracking.tracking_uri)
    parent = ""
    if cfg.tracking.enabled:
        params = {"search.space": str(Path(space_file).absolute()), "search.trials": str(trials),
                  "search.algorithm": search, "search.scheduler": scheduler, "search.metric": space.metric,
                  "search.mode": space.mode, "search.max_concurrent": str(concurrency),
                  **{f"search.params.{k}": p.type for k, p in space.params.items()}}
        parent = tracking.start_run(uri, cfg.tracking.experiment, f"tune-{name}", params,
                                    tags={"vidpeft.kind": "search", "vidpeft.search": name,
                                          "vidpeft.search_dir": str(search_dir)},
                                    run_id=state.get("parent_run_id") if restore else None)
        if not restore:
            tracking.log_artifact(uri, parent, space_file)
    search_dir.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"spec": spec, "parent_run_id": parent, "tracking_uri": uri}, indent=2))

    # 3) the trials
    job = TrialJob(label=name, trials_dir=str(search_dir / "trials"), tracking_uri=uri, parent_run_id=parent,
                   base=base, space=space)
    sched = None
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # max_t = epochs: the last epoch's report (sent by the trial driver) ends every trial
        sched = ASHAScheduler(time_attr=EPOCHS_DONE, max_t=max_epochs(cfg, space),
                              grace_period=grace_period, reduction_factor=reduction_factor)
    tune_config = tune.TuneConfig(metric=space.metric, mode=space.mode, scheduler=sched,
                                  reuse_actors=reuse_trials(),
                                  search_alg=search_alg(search, cfg.seed, concurrency),
                                  num_samples=trials,
                                  max_concurrent_trials=None if search == "random" else concurrency,
                                  trial_dirname_creator=trial_dirname)
    try:
        results, ended = run_trials(job, exp_dir, restore, space.to_tune(), tune_config)
    except BaseException:
        if parent:
            tracking.end_run(uri, parent, status="FAILED")
        raise

    # 4) results: trial run statuses, the best config, the parent run's summary
    status = close_trial_runs(uri, parent, results, ended) if parent else {}
    if {result_trial_id(r) for r in results} - ended:
        if parent:
            tracking.end_run(uri, parent, status="KILLED")
        print(f"[vidpeft] search interrupted: run the same command again to resume it from {search_dir}")
        return {"interrupted": True, "search_dir": str(search_dir)}
    return _write_best(results, space, base, name, search_dir, uri, parent, status, cfg.optim.epochs)


def _write_best(results, space: SearchSpace, base: dict, name: str, search_dir: Path, uri: str, parent: str,
                status: dict[str, str], epochs: int) -> dict:
    scored = [r for r in results if r.error is None and isinstance(r.metrics.get(space.metric), (int, float))]
    if not scored:
        if parent:
            tracking.end_run(uri, parent, status="FAILED")
        errors = "; ".join(f"{result_trial_id(r)}: {r.error}" for r in results if r.error)
        raise RuntimeError(f"no trial reported {space.metric}" + (f" ({errors})" if errors else ""))
    best = (max if space.mode == "max" else min)(scored, key=lambda r: r.metrics[space.metric])
    params = space.decode(best.config)
    data = for_training(apply_params(base, params), f"{name}-best")
    from_dict(ExperimentConfig, data)  # what `vidpeft train` will do with the file: must pass
    value, best_id = best.metrics[space.metric], result_trial_id(best)
    header = (f"# Best of search {name}: {space.metric} = {value:.6g} ({space.mode}) in trial "
              f"{best_id}.\n# Train it with: vidpeft train --config {search_dir / 'best.yaml'}\n")
    (search_dir / "best.yaml").write_text(header + dump_yaml(data))
    summary = {"metric": space.metric, "mode": space.mode, "value": value, "trial_id": best_id,
               "params": params, "output_dir": best.metrics.get("output_dir"), "run_id": best.metrics.get("run_id"),
               "search_dir": str(search_dir), "parent_run_id": parent}
    (search_dir / "best.json").write_text(json.dumps(summary, indent=2, default=str))
    rows = []
    for r in results:
        trial = result_trial_id(r)
        done = r.metrics.get(EPOCHS_DONE, 0)
        planned = space.decode(r.config).get("optim.epochs", epochs)
        state = "error" if r.error else ("stopped early" if done < planned else "completed")
        rows.append({"trial_id": trial, "state": state, "epochs": done, space.metric: r.metrics.get(space.metric),
                     "mlflow_status": status.get(trial, ""), **space.decode(r.config)})
    import csv

    with open(search_dir / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if parent:
        tracking.log_metrics(uri, parent, {f"best_{space.metric}": value}, step=0)
        tracking.client(uri).set_tag(parent, "vidpeft.best_trial", best_id)
        for f in ("best.yaml", "best.json", "trials.csv"):
            tracking.log_artifact(uri, parent, search_dir / f)
        tracking.end_run(uri, parent)
    print("\n" + "\n".join(f"{r['trial_id']:<14} {r['state']:<14} {r[space.metric]}" for r in rows))
    print(f"\nbest: {space.metric} = {value:.4f} (trial {best_id}) with {params}")
    print(f"best config: {search_dir / 'best.yaml'}  (vidpeft train --config {search_dir / 'best.yaml'})")
    return summary
