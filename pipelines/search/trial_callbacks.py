"""The callbacks a Tune trial's `vidpeft train` run carries (Train side) and the search's Tuner runs
(driver side): each epoch's metrics to Tune, and freeing a stopped trial's Train placement group."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ray.train import UserCallback
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

from pipelines.runtime import ray_env
from pipelines.runtime.ray_compat import PlacementGroupID, WorkerGroupCallback, worker_group_placement_group_id

TRAIN_PG = "train_placement_group"  # result key: the trial's Train worker placement group (hex id)
# Result key and ASHA's clock: epochs trained, counting those before a resume (Tune's own
# training_iteration restarts at 1 when an interrupted trial resumes from its checkpoint).
EPOCHS_DONE = "epochs_done"


# Set in a Train controller's process (one run per controller) by NotePlacementGroup.
_WORKER_GROUP_PG: dict[str, str] = {}


class NotePlacementGroup(WorkerGroupCallback):
    """Ray Train frees the placement group of a run whose controller died (the trial ASHA stopped)
    from a detached watcher that finds the cluster by address auto-detection; with two Ray instances
    on one host that fails, the group keeps its CPUs, and every later trial waits forever. So the
    group's id rides along with each result to Tune, whose driver frees it (TrialEnds)."""

    def after_worker_group_start(self, worker_group) -> None:
        _WORKER_GROUP_PG["id"] = worker_group_placement_group_id(worker_group)


class TrialEnds(Callback):
    """Tune callback (driver side) for every trial that ends (completed, stopped by the scheduler, or
    failed): frees its Train placement group if still there, and notes its id in ``record``. A trial
    Ctrl-C cut short never gets here (Tune just marks it terminated): the record tells them apart."""

    def __init__(self, record: str) -> None:
        self.record = record

    def _ended(self, trial) -> None:
        release_placement_group(trial.last_result.get(TRAIN_PG, ""))
        path = Path(self.record)
        ended = set(json.loads(path.read_text())) if path.exists() else set()
        path.write_text(json.dumps(sorted(ended | {trial.trial_id})))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended(trial)
        epochs = trial.last_result.get(EPOCHS_DONE)
        print(f"[vidpeft] trial {trial.trial_id} ended" + (f" after {epochs} epoch(s)" if epochs else ""), flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trial)


def release_placement_group(hex_id: str) -> bool:
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    if not hex_id:
        return False
    pg = PlacementGroup(PlacementGroupID.from_hex(hex_id))
    if placement_group_table(pg).get("state") in (None, "REMOVED"):
        return False  # the normal case: Train removed it when the run ended
    remove_placement_group(pg)
    if ray_env.verbose():  # housekeeping: the trial's own line already says it stopped
        print(f"[vidpeft] freed the Train placement group {hex_id} of a stopped trial", flush=True)
    return True


class EpochReporter(UserCallback):
    """Forwards each epoch's metrics from Train to Tune, except the last epoch's: the trial driver
    reports that itself once weights, metrics.json and the MLflow run are closed, because a scheduler
    that stops a trial on its final result (ASHA at max_t) would kill the driver before it wrote them.

    Train workers' reports reach the trial through Tune's queue (``TuneReportCallback``, created here, in
    the trial's process). A loop in the trial's own thread (``in_process``) reports to Tune from a thread of
    its own: Tune holds a reporting thread until the scheduler's verdict, and the loop, like a Train worker,
    goes on meanwhile (it logs the epoch to MLflow after its report). A stop reaches the loop at its next
    report, or at ``wait``."""

    def __init__(self, last_epoch: int, in_process: bool = False) -> None:
        self.last_epoch = last_epoch
        self.queue = None if in_process else TuneReportCallback()
        self._sending: threading.Thread | None = None
        self._stopped = False

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if not metrics or metrics[0].get("epoch", -1) >= self.last_epoch:
            return
        first = {**metrics[0], TRAIN_PG: _WORKER_GROUP_PG.get("id", ""), EPOCHS_DONE: metrics[0].get("epoch", -1) + 1}
        if self.queue is not None:
            self.queue.after_report(run_context, [first, *metrics[1:]], checkpoint)
            return
        if checkpoint is not None:  # as Tune's queue callback adds it
            first[CHECKPOINT_PATH_KEY] = checkpoint.path
        self.wait()  # Tune takes the results in order
        self._sending = threading.Thread(target=self._send, args=(first,), name="vidpeft-tune-report", daemon=True)
        self._sending.start()

    def _send(self, metrics: dict) -> None:
        import ray.tune

        try:
            ray.tune.report(metrics)
        except SystemExit:  # Tune ends the reporting thread of a trial its scheduler stopped
            self._stopped = True

    def wait(self) -> None:
        """The report in flight is taken; a trial the search stopped on it ends here (SystemExit)."""
        if self._sending is not None:
            self._sending.join()
            self._sending = None
        if self._stopped:
            raise SystemExit(0)
