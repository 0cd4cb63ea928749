"""check-videos and prepare on data in a real S3-compatible server (moto on 127.0.0.1)."""

from __future__ import annotations

import json

import pytest

from components.data.converters import convert
from components.data.manifest import read_manifest
from pipelines.cli import main
from pipelines.data.check_videos import check_manifest
from tests.components.data.test_converters import video, write_csv
from tests.pipelines.data.test_check_videos import messy  # noqa: F401  (the fixture)
from tests.s3_server import moto_s3


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as server:
        yield server


def test_check_videos_scans_a_bucket(s3, messy, tmp_path, monkeypatch, capsys):  # noqa: F811
    prefix = s3.upload_tree(messy.parent, "messy")
    manifest = f"{prefix}/manifest.parquet"
    report, bad_ids = check_manifest(manifest, workers=2)
    assert bad_ids == {"late", "t", "e", "g", "m"}
    reasons = {b["path"].rsplit("/", 1)[-1]: b["reason"] for b in report.bad}
    assert reasons["missing.mp4"] == "not found" and reasons["empty.mp4"] == "empty (zero-byte) object"
    assert report.manifest == manifest
    monkeypatch.chdir(tmp_path)  # a remote manifest's reports go to the working directory
    assert main(["check-videos", manifest, "--workers", "1", "--clean", f"{prefix}/clean.parquet"]) == 1
    assert json.loads((tmp_path / "manifest.parquet.check.json").read_text())["bad_clips"] == 5
    assert "missing.mp4: not found" in capsys.readouterr().out
    assert sorted(read_manifest(f"{prefix}/clean.parquet").table["clip_id"].to_pylist()) == ["a", "a2", "b"]


def test_prepare_finds_videos_below_a_bucket_prefix(s3, tmp_path):
    vids = tmp_path / "k400"
    video(vids / "train" / "abseiling" / "abc_000010_000020.mp4")
    video(vids / "val" / "def_000003_000013.mp4")
    prefix = s3.upload_tree(vids, "k400")
    header = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]
    train = write_csv(tmp_path / "train.csv", header, [["abseiling", "abc", 10, 20, "train", 0],
                                                        ["abseiling", "gone", 5, 15, "train", 0]])
    val = write_csv(tmp_path / "validate.csv", header, [["abseiling", "def", 3, 13, "val", 1]])
    out = tmp_path / "k.parquet"
    report = convert("kinetics", [train, val], prefix + "/", out, missing="skip")
    rows = {r["clip_id"]: r for r in read_manifest(out).table.to_pylist()}  # check_files: a LIST of the bucket
    assert rows["abc_000010_000020"]["video_path"] == f"{prefix}/train/abseiling/abc_000010_000020.mp4"
    assert rows["def_000003_000013"]["video_path"] == f"{prefix}/val/def_000003_000013.mp4"
    assert [s["clip_id"] for s in report.skipped] == ["gone_000005_000015"]
    assert main(["prepare", "kinetics", "--annotations", str(train), "--videos", "s3://vidpeft/nothing/",
                 "--out", str(tmp_path / "x.parquet")]) == 2


def test_check_videos_reads_a_packed_dataset_a_shard_at_a_time(s3, messy, tmp_path):  # noqa: F811
    from components.data.manifest import write_manifest
    from components.data.packed import pack_manifest

    m = read_manifest(messy, check_files=False)
    rows = [r for r in m.table.to_pylist() if r["clip_id"] != "m"]  # pack needs every video to be there
    present = tmp_path / "present.parquet"
    write_manifest(present, rows, m.class_names, feature_dims={})
    pack_manifest(str(present), s3.uri("messy_packed"), shard_bytes=8_000)
    report, bad_ids = check_manifest(s3.uri("messy_packed/manifest.parquet"), workers=2)
    assert bad_ids == {"late", "t", "e", "g"}
    assert report.videos == 5 and report.bad_videos == 3
    reasons = {b["path"].rsplit("#", 1)[0].rsplit("/", 1)[-1] for b in report.bad}
    assert all(r.startswith("shard-") for r in reasons)


def test_prepare_takes_a_packed_dataset_as_its_videos(s3, tmp_path):
    from components.data.packed import ShardReader, pack_manifest

    vids = tmp_path / "k400"
    video(vids / "train" / "abseiling" / "abc_000010_000020.mp4")
    video(vids / "val" / "def_000003_000013.mp4")
    header = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]
    train = write_csv(tmp_path / "train.csv", header, [["abseiling", "abc", 10, 20, "train", 0]])
    val = write_csv(tmp_path / "validate.csv", header, [["abseiling", "def", 3, 13, "val", 1]])
    convert("kinetics", [train, val], vids, tmp_path / "first.parquet")
    pack_manifest(str(tmp_path / "first.parquet"), s3.uri("k400_packed"))
    # new annotations over the same videos, matched inside the packed dataset by file name
    out = tmp_path / "again.parquet"
    convert("kinetics", [train, val], s3.uri("k400_packed/manifest.parquet"), out)
    rows = {r["clip_id"]: r for r in read_manifest(out).table.to_pylist()}
    r = rows["def_000003_000013"]
    assert r["video_path"].startswith(s3.uri("k400_packed/shards-")) and r["member"].endswith(".mp4")
    data = ShardReader().member(r["video_path"], r["member_offset"], r["member_size"])
    assert data == (vids / "val" / "def_000003_000013.mp4").read_bytes()
