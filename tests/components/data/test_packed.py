"""`vidpeft pack`'s writer and reader: WebDataset tar shards in a bucket (moto on 127.0.0.1) or a folder,
a manifest that points at (shard, member), one fetch per shard, and nothing left behind by a failure."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from components.data.manifest import read_manifest, write_manifest
from components.data.packed import ShardReader, pack_manifest, parse_size
from components.io import StorageError, list_files, read_bytes
from tests.s3_server import moto_s3


@pytest.fixture(scope="module")
def s3(synth_data):
    with moto_s3() as server:
        server.upload_tree(synth_data.parent, "synth")
        yield server


def test_parse_size():
    assert parse_size("512MB") == 512 * 10**6 and parse_size("1GiB") == 1 << 30 and parse_size("20000") == 20000
    with pytest.raises(ValueError, match="not a size"):
        parse_size("big")


def test_pack_into_a_bucket_and_read_members(s3, synth_data):
    local = read_manifest(synth_data, check_files=False)
    report = pack_manifest(s3.uri("synth/manifest.parquet"), s3.uri("packed"), shard_bytes=20_000)
    assert report.shards > 1 and report.clips == local.table.num_rows
    m = read_manifest(s3.uri("packed/manifest.parquet"))  # check_files: the shards are there
    rows = m.table.to_pylist()
    assert m.class_names == local.class_names and m.feature_dims == local.feature_dims
    shards = sorted({r["video_path"] for r in rows})
    assert len(shards) == report.shards and all(s.startswith(s3.uri("packed/shards-")) for s in shards)
    reader, fetched = ShardReader(), []
    reader.fetch = lambda uri: fetched.append(uri) or read_bytes(uri)
    for r in rows:  # in pack order: one fetch per shard
        data = reader.member(r["video_path"], r["member_offset"], r["member_size"])
        assert data == (synth_data.parent / r["source_path"].split("/synth/", 1)[1]).read_bytes()
    assert fetched == shards
    # each shard is a plain tar in WebDataset layout: <key>.mp4, <key>.json, <key>.<feature>.npy
    with tarfile.open(fileobj=io.BytesIO(read_bytes(shards[0]))) as tar:
        names = tar.getnames()
        first = names[0].split(".")[0]
        meta = json.loads(tar.extractfile(f"{first}.json").read())
        assert f"{first}.mp4" in names and meta["clip_id"] == rows[0]["clip_id"]
        feats = [n for n in names if n.endswith(".npy")]
        if feats:
            key, col = feats[0].split(".")[:2]
            arr = np.load(io.BytesIO(tar.extractfile(feats[0]).read()))
            clip = next(r for r in rows if r["member"].startswith(key) or r["clip_id"] == json.loads(
                tar.extractfile(f"{key}.json").read())["clip_id"])
            assert np.allclose(arr, clip[col])


def test_a_failed_pack_leaves_nothing(s3, synth_data, tmp_path):
    rows = read_manifest(synth_data, check_files=False).table.slice(0, 6).to_pylist()
    rows[4]["video_path"] = s3.uri("synth/videos/none.mp4")
    bad = tmp_path / "bad.parquet"
    write_manifest(bad, rows, ["a", "b", "c", "d"], feature_dims={})
    with pytest.raises(StorageError, match="none.mp4: not found"):
        pack_manifest(str(bad), s3.uri("failed"), shard_bytes=4_000)
    assert list_files(s3.uri("failed/")) == []
    with pytest.raises(StorageError):
        pack_manifest(str(bad), str(tmp_path / "out"), shard_bytes=4_000)
    assert not list((tmp_path / "out").iterdir())


def test_pack_into_a_local_folder(synth_data, tmp_path):
    report = pack_manifest(str(synth_data), str(tmp_path / "p"))
    assert report.shards == 1
    m = read_manifest(tmp_path / "p" / "manifest.parquet")
    r = m.table.to_pylist()[3]
    assert ShardReader().member(r["video_path"], r["member_offset"], r["member_size"]) == \
        (synth_data.parent / "videos" / f"{r['clip_id']}.mp4").read_bytes()
