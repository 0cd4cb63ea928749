"""All training epochs as one Ray Data stream, so the decoder pool stays warm across epochs.

Ray Data rebuilds a dataset's operators (and its decoder actor pool) on every execution
(ray-project/ray#46479), which cost each epoch seconds before its first batch. The training split is
therefore executed once for the whole run: a small stream of (row, epoch) pairs, one fresh seeded
permutation of the manifest rows per epoch, decoded by one actor pool that lives for the run and
keeps decoding the next epoch's first clips while the current epoch ends and validation runs.

Each worker cuts its shard of the stream into epochs by count (``split_epochs``): every worker
takes the same number of clips per epoch, so DDP workers stay in step. An epoch holds exactly one
epoch's permutation when there is one worker; with several, Ray's split hands out blocks as workers
ask for them, so a worker's epoch can borrow a few clips from the neighbouring epoch (its count is
exact either way).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from pipelines.runtime.phase_log import mark

ROW, EPOCH = "row", "epoch"  # the stream's columns: manifest row index, epoch it belongs to


def epoch_order(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    """Epoch ``epoch``'s visiting order of ``num_rows`` manifest rows (same seed, same order)."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def grouped_epoch_order(groups: np.ndarray, seed: int, epoch: int) -> list[np.ndarray]:
    """Epoch ``epoch``'s visit of rows that come in groups (the shards of a packed dataset): the groups
    in a seeded order, each group's rows (indices into ``groups``) shuffled within it."""
    rng = np.random.default_rng([seed, epoch])
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    members = np.split(order, bounds) if len(order) else []
    return [rng.permutation(members[g]) for g in rng.permutation(len(members))]


def stream_table(num_rows: int, seed: int, epochs: range) -> pa.Table:
    """The (row, epoch) pairs of ``epochs``, epoch after epoch; a few bytes per clip and epoch."""
    rows = [epoch_order(num_rows, seed, e) for e in epochs]
    tags = [np.full(num_rows, e, dtype=np.int32) for e in epochs]
    return pa.table({ROW: np.concatenate(rows or [np.zeros(0, np.int64)]).astype(np.int64),
                     EPOCH: np.concatenate(tags or [np.zeros(0, np.int32)])})


def drop_consumed(table: pa.Table, consumed: np.ndarray | None) -> pa.Table:
    """``table``'s (row, epoch) pairs without those in ``consumed`` ((n, 2) pairs trained before a
    mid-epoch checkpoint: pipelines/run/stream_position.py), in the order they had."""
    if consumed is None or not len(consumed) or not table.num_rows:
        return table
    width = np.int64(1) << 32  # a pair as one int64 key: epoch * 2**32 + row
    keys = table[EPOCH].to_numpy().astype(np.int64) * width + table[ROW].to_numpy()
    done = consumed[:, 1].astype(np.int64) * width + consumed[:, 0].astype(np.int64)
    return table.filter(pa.array(~np.isin(keys, done)))


def rows_per_worker(clips: int, workers: int) -> int:
    """Clips each worker trains on per epoch: an equal share (Ray's split is equal; a remainder of
    fewer than ``workers`` clips is left out of the epoch)."""
    share = clips // max(workers, 1)
    if share < 1:
        raise ValueError(f"{clips} training clip(s) cannot be shared among {workers} workers: "
                         "use fewer workers (scaling.num_workers) or more clips")
    return share


def _rows(batch: dict) -> int:
    return len(next(iter(batch.values())))


def _cut(batch: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] for k, v in batch.items()}


def _join(parts: list[dict]) -> dict:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if all(hasattr(v, "dim") for v in first.values()):  # torch tensors
        import torch

        return {k: torch.cat([p[k] for p in parts]) for k in first}
    return {k: np.concatenate([p[k] for p in parts]) for k in first}


def split_epochs(batches: Iterable[dict], rows_per_epoch: int, batch_size: int,
                 first_rows: int | None = None) -> Iterator[Iterator[dict]]:
    """Cut a stream of column batches into epochs of exactly ``rows_per_epoch`` rows (the first one
    ``first_rows`` when given: the rest of an epoch resumed from a mid-epoch checkpoint).

    Yields one iterator per epoch, of batches of ``batch_size`` rows (an epoch's last batch may be
    smaller); consume each epoch's iterator before asking for the next. Rows of a stream batch that
    straddles an epoch's end start the next epoch. The stream ending early ends the last epoch early.
    """
    stream = iter(batches)
    held: list[dict] = []  # rows taken from the stream, not yet handed out
    done = False

    def take(n: int) -> dict | None:
        nonlocal done
        have = sum(_rows(b) for b in held)
        while have < n and not done:
            try:
                b = next(stream)
            except StopIteration:
                done = True
                break
            mark("batch")
            if _rows(b):
                held.append(b)
                have += _rows(b)
        if not held:
            return None
        out, got = [], 0
        while held and got < n:
            b = held.pop(0)
            k = min(n - got, _rows(b))
            out.append(_cut(b, 0, k))
            if k < _rows(b):
                held.insert(0, _cut(b, k, _rows(b)))
            got += k
        return _join(out)

    sizes = [first_rows] if first_rows is not None else []

    def epoch() -> Iterator[dict]:
        left = sizes.pop() if sizes else rows_per_epoch
        while left > 0:
            batch = take(min(batch_size, left))
            if batch is None:
                return
            left -= _rows(batch)
            yield batch

    while not (done and not held):
        yield epoch()
