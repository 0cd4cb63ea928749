"""Mid-epoch checkpoints (`checkpoint.every_steps` / `checkpoint.every_minutes`) and the data stream's position.

An epoch's clip order is fixed by (seed, epoch) (pipelines/data/epoch_stream.py). A mid-epoch checkpoint
records which (manifest row, epoch) pairs the workers have trained on so far in the epoch, gathered from
every worker at the checkpoint step (POSITION, listed and checksummed like the checkpoint's other files).
The training stream is built by ``TrainStream``, which Ray Train calls each time it starts the worker
group (the first start, each restart after a lost worker, and a `--resume`): it reads the newest
complete checkpoint in the run's storage and streams the epochs still to run without the pairs already
trained. So a resumed run neither repeats nor skips a clip of the interrupted epoch; the later epochs run
in full.

Driver side: ``TrainStream``. Worker side: ``MidEpoch`` (records the pairs, decides when a checkpoint is
due, and counts the resumed epoch's clips).
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field

import numpy as np

from pipelines.data.epoch_stream import EPOCH, ROW, rows_per_worker
from pipelines.run.checkpoints import MID_EPOCH, STATE, latest_checkpoint

POSITION = "stream_position.pt"  # int64 tensor (n, 2): the (row, epoch) pairs trained in the interrupted epoch


def read_position(checkpoint: str) -> tuple[int, np.ndarray | None]:
    """(first epoch still to run, pairs of it already trained or None) from a checkpoint dir or URI."""
    import json

    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(checkpoint if "://" in checkpoint else f"file://{checkpoint}")
    with fs.open_input_stream(f"{root}/{STATE}") as f:
        state = json.loads(f.read())
    if not state.get(MID_EPOCH):
        return state["epoch"] + 1, None
    import torch

    with fs.open_input_stream(f"{root}/{POSITION}") as f:
        pairs = torch.load(io.BytesIO(f.read()), weights_only=True)
    return state[MID_EPOCH]["epoch"], pairs.numpy()


@dataclass
class TrainStream:
    """The training split's stream from where the run's newest checkpoint left it (a Ray Train dataset
    factory: called on the controller at every start of the worker group, so a restart after a lost worker
    begins at the checkpoint it restores, not at the epochs the driver planned)."""

    table: object  # the training split (pyarrow.Table)
    settings: object  # DecodeSettings
    decode_actors: int
    decode_cpus: float
    decode_batch_size: int
    limit: int
    epochs: int  # optim.epochs
    storage: str | None  # the run's checkpoint storage (None: always from epoch 0)
    verbose: bool = False  # Ray Data's execution-start lines (the driver's log.level)

    def __call__(self):
        import ray.data

        from pipelines.data.ingest import build_dataset

        ray.data.DataContext.get_current().print_on_execution_start = self.verbose  # as the driver's

        newest = latest_checkpoint(self.storage) if self.storage else None
        first, consumed = read_position(newest) if newest else (0, None)
        return build_dataset(self.table, self.settings, self.decode_actors, self.decode_cpus,
                             self.decode_batch_size, self.limit, epochs=range(first, max(self.epochs, first + 1)),
                             consumed=consumed)


def _gather_pairs(pairs: np.ndarray) -> np.ndarray:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return pairs
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, pairs)
    return np.concatenate(parts)


def _agree(flag: bool) -> bool:
    """Rank 0's decision, on every rank (a checkpoint is a collective report)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.broadcast(t, src=0)
    return bool(t.item())


@dataclass
class MidEpoch:
    """A worker's view of the stream position: the pairs it trained this epoch, and when to checkpoint.

    ``every_steps``/``every_minutes``: checkpoint.* (0 = off); ``enabled`` False (a Tune trial, whose
    reports are its scheduler's iterations) turns both off.
    """

    every_steps: int
    every_minutes: float
    enabled: bool = True
    clip_log: object = None  # tests: called with each batch's pairs (pipelines/run/fault_hook.py)
    before: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # pairs of a restored checkpoint
    epoch: int = -1
    steps_before: int = 0  # optimizer steps of the interrupted epoch taken before the restored checkpoint
    _seen: list = field(default_factory=list)
    _batches: int = 0
    _total_batches: int = 0
    _epoch_start_updates: int = 0
    _checked: int = 0
    _last_save: float = field(default_factory=time.monotonic)

    @property
    def active(self) -> bool:
        return self.enabled and (self.every_steps > 0 or self.every_minutes > 0)

    def restore(self, state: dict, pairs: np.ndarray | None) -> None:
        """From a restored checkpoint's state.json and POSITION (a mid-epoch one, else nothing to do)."""
        mid = state.get(MID_EPOCH)
        if mid and pairs is not None:
            self.epoch, self.before, self.steps_before = mid["epoch"], pairs, mid["steps"]

    def first_rows(self, clips: int, workers: int) -> int | None:
        """Rows of the resumed epoch for each worker (None: not resuming mid-epoch)."""
        if self.epoch < 0:
            return None
        return rows_per_worker(clips, workers) - len(self.before) // max(workers, 1)

    def start(self, epoch: int, rows: int, batch_size: int, updates: int) -> None:
        """A new epoch of ``rows`` rows for this worker begins (optimizer steps so far: ``updates``)."""
        if epoch != self.epoch:
            self.before, self.steps_before = np.zeros((0, 2), np.int64), 0
        self.epoch, self._seen, self._batches = epoch, [], 0
        self._total_batches = math.ceil(rows / batch_size)
        self._epoch_start_updates = self._checked = updates

    def record(self, batches):
        """The epoch's batches, passed through; the pairs of each are kept as it is handed to training."""
        for batch in batches:
            pairs = np.stack([batch[ROW].long().cpu().numpy(), batch[EPOCH].long().cpu().numpy()], axis=1)
            self._seen.append(pairs)
            self._batches += 1
            if self.clip_log is not None:
                self.clip_log(pairs)
            yield batch

    def steps(self, updates: int) -> int:
        """Optimizer steps into this epoch, those before a restored mid-epoch checkpoint included."""
        return self.steps_before + updates - self._epoch_start_updates

    def due(self, step) -> bool:
        """After a training batch: is a mid-epoch checkpoint due now? Same answer on every rank (all take
        the same number of batches and steps)."""
        if not self.active or step.micro != 0 or self._batches >= self._total_batches:
            return False  # mid-accumulation, or the epoch's last batch (its end-of-epoch checkpoint follows)
        stepped = step.updates > self._checked  # an optimizer step on this batch
        self._checked = step.updates
        due = stepped and self.every_steps > 0 and self.steps(step.updates) % self.every_steps == 0
        if self.every_minutes > 0:  # clocks differ between workers: rank 0 decides
            due = _agree(due or (stepped and time.monotonic() - self._last_save >= 60 * self.every_minutes))
        return due

    def position(self) -> np.ndarray:
        """Every pair trained so far in this epoch, by all workers (a collective: call on every rank)."""
        mine = np.concatenate(self._seen) if self._seen else np.zeros((0, 2), np.int64)
        return np.concatenate([self.before, _gather_pairs(mine)]).astype(np.int64)

    def saved(self) -> None:
        self._last_save = time.monotonic()

    def state(self, pairs: np.ndarray, updates: int) -> dict:
        return {"epoch": self.epoch, "clips": int(len(pairs)), "steps": self.steps(updates)}

    @staticmethod
    def files(pairs: np.ndarray) -> dict:
        import torch

        return {POSITION: torch.from_numpy(pairs)}
