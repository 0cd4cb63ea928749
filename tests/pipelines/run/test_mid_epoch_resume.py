"""Mid-epoch checkpoints (checkpoint.every_steps / every_minutes) and the data stream's position: a run
restarted from one neither repeats nor skips a clip of the interrupted epoch. End to end, with a Train worker
killed right after one: test_faults.py::test_worker_killed_twice_resumes_from_the_newest_checkpoint_each_time."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from pipelines.data.epoch_stream import EPOCH, ROW, drop_consumed, split_epochs, stream_table
from pipelines.run.checkpoints import MID_EPOCH, latest_checkpoint, save_checkpoint
from pipelines.run.stream_position import MidEpoch, POSITION, read_position
from tests.pipelines.run.test_faults import MODEL_CONFIG, tiny_training_state


def test_drop_consumed_keeps_the_rest_in_order():
    table = stream_table(10, seed=3, epochs=range(1, 3))
    order = table[ROW].to_numpy()
    consumed = np.array([[order[0], 1], [order[1], 1], [order[12], 2]])  # two of epoch 1, one of epoch 2
    left = drop_consumed(table, consumed)
    assert left.num_rows == 17
    pairs = set(zip(left[ROW].to_pylist(), left[EPOCH].to_pylist()))
    assert not pairs & {(int(r), int(e)) for r, e in consumed}
    assert left[ROW].to_pylist()[:8] == order[2:10].tolist()  # the epoch goes on where it stopped
    assert drop_consumed(table, None) is table


def test_split_epochs_first_epoch_is_the_rest_of_the_interrupted_one():
    stream = [{"x": np.arange(i, i + 4)} for i in range(0, 24, 4)]
    epochs = split_epochs(stream, rows_per_epoch=10, batch_size=3, first_rows=4)
    sizes = [[len(b["x"]) for b in next(epochs)] for _ in range(3)]
    assert sizes == [[3, 1], [3, 3, 3, 1], [3, 3, 3, 1]]


def _save(directory: Path, state: dict, pairs: np.ndarray | None = None) -> Path:
    directory.mkdir(parents=True)
    files = MidEpoch.files(pairs) if pairs is not None else None
    save_checkpoint(directory, *tiny_training_state(), {"metrics": {}, **state}, MODEL_CONFIG, extra=files)
    return directory


def test_mid_epoch_checkpoint_ranks_between_epoch_ends(tmp_path):
    run = tmp_path / "train-1"
    _save(run / "checkpoint_000", {"epoch": 0})
    assert read_position(latest_checkpoint(tmp_path)) == (1, None)
    pairs = np.array([[5, 1], [2, 1], [7, 1]], dtype=np.int64)
    mid = _save(run / "checkpoint_001", {"epoch": 0, MID_EPOCH: {"epoch": 1, "clips": 3, "steps": 1}}, pairs)
    assert latest_checkpoint(tmp_path) == str(mid)
    first, consumed = read_position(str(mid))
    assert first == 1 and consumed.tolist() == pairs.tolist()
    further = _save(run / "checkpoint_002", {"epoch": 0, MID_EPOCH: {"epoch": 1, "clips": 6, "steps": 2}}, pairs)
    assert latest_checkpoint(tmp_path) == str(further)
    end = _save(run / "checkpoint_003", {"epoch": 1})
    assert latest_checkpoint(tmp_path) == str(end)
    (further / POSITION).write_bytes(b"torn")  # a damaged position file: the checkpoint is passed over
    (end / "state.json").unlink()
    assert latest_checkpoint(tmp_path) == str(mid)


def test_due_every_steps_at_step_boundaries_only():
    mid = MidEpoch(every_steps=2, every_minutes=0)
    step = SimpleNamespace(micro=0, updates=10)
    mid.start(epoch=0, rows=40, batch_size=4, updates=10)  # 10 batches
    batches = [{ROW: torch.arange(b * 4, b * 4 + 4), EPOCH: torch.zeros(4, dtype=torch.long)} for b in range(10)]
    due = []
    for batch, _ in enumerate(mid.record(batches)):
        step.micro = (batch + 1) % 2  # accumulate=2: a step every second batch
        if step.micro == 0:
            step.updates += 1
        due.append(mid.due(step))
    # optimizer steps after batches 2, 4, 6, 8, 10: every 2nd of them, never on the epoch's last batch
    assert [i + 1 for i, d in enumerate(due) if d] == [4, 8]
    assert len(mid.position()) == 40 and mid.state(mid.position(), step.updates)["steps"] == 5
    assert not MidEpoch(every_steps=2, every_minutes=0, enabled=False).active


def test_due_every_minutes_counts_from_the_last_checkpoint(monkeypatch):
    import pipelines.run.stream_position as sp

    now = [1000.0]
    monkeypatch.setattr(sp.time, "monotonic", lambda: now[0])
    mid = MidEpoch(every_steps=0, every_minutes=2)
    mid.saved()  # the last checkpoint: at 1000 s
    mid.start(epoch=3, rows=12, batch_size=4, updates=0)
    step = SimpleNamespace(micro=0, updates=0)
    batches = iter(mid.record([{ROW: torch.arange(4), EPOCH: torch.full((4,), 3)} for _ in range(3)]))
    next(batches)
    step.updates, now[0] = 1, 1000.0 + 119
    assert not mid.due(step)
    next(batches)
    step.updates, now[0] = 2, 1000.0 + 121
    assert mid.due(step)
    next(batches)
    step.updates, now[0] = 3, 1000.0 + 500
    assert not mid.due(step)  # the epoch's last batch: its end-of-epoch checkpoint follows


def test_the_train_stream_factory_does_not_import_torch():
    """Ray Train's controller builds the training stream (TrainStream) at every start of the workers; importing
    torch there cost ~3 s of every run's start-up (benchmarks/fixed_cost.py, 'dataset plans + Train controller')."""
    import subprocess
    import sys

    code = "import sys, pipelines.run.stream_position; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
