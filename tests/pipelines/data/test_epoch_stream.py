"""The training stream: every epoch in one Ray Data execution, cut into exact epochs on each worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.manifest import read_manifest
from pipelines.data.epoch_stream import rows_per_worker, split_epochs, stream_table


def _batches(sizes: list[int], tensors: bool = False):
    start = 0
    for n in sizes:
        values = np.arange(start, start + n)
        start += n
        yield {"x": torch.as_tensor(values) if tensors else values, "y": values * 2}


@pytest.mark.parametrize("tensors", [False, True])
def test_epochs_are_exact_counts_whatever_the_stream_batches(tensors):
    # 3 epochs of 10 rows from stream batches of uneven sizes (a batch straddles each epoch's end)
    epochs = split_epochs(_batches([4, 7, 3, 9, 1, 6], tensors), rows_per_epoch=10, batch_size=4)
    seen = []
    for _ in range(3):
        batches = list(next(epochs))
        assert [len(b["x"]) for b in batches] == [4, 4, 2]  # batch_size, the epoch's remainder last
        rows = np.concatenate([np.asarray(b["x"]) for b in batches])
        assert (np.concatenate([b["y"] for b in batches]) == rows * 2).all()  # columns stay aligned
        seen.append(rows.tolist())
    assert seen == [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]


def test_a_short_stream_ends_the_last_epoch_early():
    epochs = split_epochs(_batches([5, 5, 3]), rows_per_epoch=10, batch_size=8)
    assert [len(b["x"]) for b in next(epochs)] == [8, 2]
    assert [len(b["x"]) for b in next(epochs)] == [3]
    assert list(epochs) == []


def test_stream_table_is_a_fresh_seeded_permutation_per_epoch():
    t = stream_table(50, seed=3, epochs=range(2, 5))
    rows, tags = t["row"].to_numpy(), t["epoch"].to_numpy()
    assert tags.tolist() == [2] * 50 + [3] * 50 + [4] * 50
    for e in range(3):
        assert sorted(rows[e * 50:(e + 1) * 50]) == list(range(50))  # each clip once per epoch
    assert rows[:50].tolist() != rows[50:100].tolist()
    assert stream_table(50, seed=3, epochs=range(3, 4))["row"].to_numpy().tolist() == rows[50:100].tolist()


def test_more_workers_than_clips_is_a_clear_error():
    assert rows_per_worker(101, 2) == 50
    with pytest.raises(ValueError, match="3 training clip.*4 workers"):
        rows_per_worker(3, 4)


def test_one_decoder_pool_decodes_every_epoch(ray_session, synth_data):
    """Three epochs from one execution: each epoch holds every clip once, in its own order, with
    its own augmentation; the same epoch decodes the same way again (seeded by clip and epoch)."""
    import ray

    from pipelines.data.ingest import DecodeSettings, build_dataset

    table = read_manifest(synth_data).split("train").slice(0, 12)
    settings = DecodeSettings(num_frames=4, size=32, sampling="segment", stride=2, training=True, seed=0,
                              task="single_label", num_outputs=4, augment=True)

    def run(epochs: range) -> list[dict]:
        ds = build_dataset(table, settings, decode_actors=1, decode_cpus=0.5, decode_batch_size=4, epochs=epochs)
        return list(ds.iter_batches(batch_size=5, batch_format="numpy"))

    before = _decoder_actors(ray)
    out = run(range(0, 3))
    created = _decoder_actors(ray) - before
    assert created == 1, f"{created} decoder actors for one 3-epoch stream"
    epoch = np.concatenate([b["epoch"] for b in out])
    video = np.concatenate([b["video"] for b in out])
    target = np.concatenate([b["target"] for b in out])
    assert epoch.tolist() == sorted(epoch.tolist()) and np.bincount(epoch).tolist() == [12, 12, 12]
    labels = np.asarray(table["label"].to_pylist())
    for e in range(3):
        assert sorted(target[epoch == e].tolist()) == sorted(labels.tolist())  # every clip once
    assert not np.array_equal(target[epoch == 0], target[epoch == 1])  # a new order each epoch
    again = run(range(1, 2))  # epoch 1 alone (a resumed run) decodes exactly as it did in the stream
    assert np.array_equal(np.concatenate([b["video"] for b in again]), video[epoch == 1])


def _decoder_actors(ray) -> int:
    """ClipDecoder actors Ray has ever started (alive or dead) in this session."""
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address, limit=10_000, raise_on_missing_output=False)
    return sum("ClipDecoder" in a.class_name for a in actors)


def test_the_stream_flows_when_only_the_decoders_cpus_are_free(ray_session, synth_data):
    """Train workers hold every CPU but the decoders' (scaling.cpus_per_worker + data.decode_cpus =
    all of the machine): cutting the stream into blocks must not wait for a CPU of its own."""
    import threading

    import ray

    from pipelines.data.ingest import DecodeSettings, build_dataset

    @ray.remote
    class Holder:  # stands in for the Train worker's reservation
        def ready(self) -> bool:
            return True

    table = read_manifest(synth_data).split("train").slice(0, 8)
    settings = DecodeSettings(num_frames=4, size=32, sampling="uniform", stride=2, training=True, seed=0,
                              task="single_label", num_outputs=4)
    # built first, as the driver does before the Train workers start
    ds = build_dataset(table, settings, decode_actors=1, decode_cpus=0.5, decode_batch_size=4, epochs=range(2))
    spare = ray.cluster_resources()["CPU"] - 0.5
    holder = Holder.options(num_cpus=spare).remote()
    ray.get(holder.ready.remote())
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.extend(
        len(b["video"]) for b in ds.iter_batches(batch_size=4, batch_format="numpy")), daemon=True)
    try:
        reader.start()
        reader.join(timeout=180)  # a hang, not a speed check: the stream takes seconds when it flows
        assert sum(got) == 16, f"the stream stalled after {sum(got)} of 16 clips with no CPU left to cut blocks"
    finally:
        ray.kill(holder)
