"""The ingest on a packed dataset in a real S3-compatible server (moto on 127.0.0.1): blocks hold one
shard each (per epoch: shards in a seeded order, rows shuffled within), a decoder fetches each shard
once, and a shard that vanished mid-run makes its clips skipped and counted, not a crash."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components.data.manifest import read_manifest
from components.data.packed import pack_manifest
from components.io import delete
from pipelines.data.epoch_stream import EPOCH, ROW
from pipelines.data.ingest import ClipDecoder, DecodeSettings, shard_blocks
from tests.s3_server import moto_s3

SETTINGS = DecodeSettings(num_frames=4, size=32, sampling="segment", stride=2, training=True, seed=0,
                          task="single_label", num_outputs=4, packed=True)


@pytest.fixture(scope="module")
def packed(synth_data):
    with moto_s3() as s3:
        s3.upload_tree(synth_data.parent, "synth")
        pack_manifest(s3.uri("synth/manifest.parquet"), s3.uri("packed"), shard_bytes=30_000)
        yield s3, read_manifest(s3.uri("packed/manifest.parquet")).split("train")


def test_blocks_hold_one_shard_and_every_row_once_per_epoch(packed):
    _, table = packed
    shards = table["video_path"].to_numpy(zero_copy_only=False)
    blocks = shard_blocks(table, seed=0, epochs=range(2))
    for e in range(2):
        mine = [b for b in blocks if b[EPOCH][0].as_py() == e]
        assert len(mine) == len(set(shards))
        rows = np.concatenate([b[ROW].to_numpy() for b in mine])
        assert sorted(rows.tolist()) == list(range(table.num_rows))  # each clip exactly once
        assert all(len(set(shards[b[ROW].to_numpy()])) == 1 for b in mine)
    first = [shards[b[ROW][0].as_py()] for b in blocks if b[EPOCH][0].as_py() == 0]
    second = [shards[b[ROW][0].as_py()] for b in blocks if b[EPOCH][0].as_py() == 1]
    assert first != second  # a new shard order each epoch (seeded)
    evaluation = shard_blocks(table, 0, None)  # manifest order, cut where the shard changes
    assert sum(b.num_rows for b in evaluation) == table.num_rows


def test_a_decoder_fetches_each_shard_once_and_skips_a_vanished_one(packed):
    s3, table = packed
    keep = ["clip_id", "video_path", "label", "member", "member_offset", "member_size"]
    rows = table.select(keep)
    decoder = ClipDecoder(SETTINGS, rows)
    blocks = shard_blocks(rows, seed=0, epochs=range(1))
    fetched = []
    decoder.shards.fetch = lambda uri, f=decoder.shards.fetch: fetched.append(uri) or f(uri)
    ok = []
    for b in blocks:
        out = decoder({ROW: b[ROW].to_numpy(), EPOCH: b[EPOCH].to_numpy()})
        assert out["video"].shape[1:] == (4, 32, 32, 3)
        ok += out["ok"].tolist()
    assert len(fetched) == len(blocks) == len(set(fetched))  # one GET per shard
    corrupt = sum(c.startswith("corrupt_") for c in rows["clip_id"].to_pylist())
    assert ok.count(False) == corrupt  # the synthetic corrupt files, skipped as usual
    gone = rows["video_path"][0].as_py()
    delete(gone)
    decoder.shards.shard = ""  # a fresh actor
    idx = np.flatnonzero(rows["video_path"].to_numpy(zero_copy_only=False) == gone)
    out = decoder({ROW: idx, EPOCH: np.zeros(len(idx), np.int32)})
    assert not out["ok"].any()  # every clip of the vanished shard skipped, none crashed the decoder
