"""gs:// through the same layer as s3://, against a real GCS emulator on 127.0.0.1 (STORAGE_EMULATOR_HOST):
objects written, listed and read back, a video decoded from its bytes, a manifest prepared from a bucket
prefix; without Google credentials one line says which variable to set, in seconds (the client's own
default retries for 15 minutes)."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from components.io import StorageError, exists, list_files, read_bytes, size, write_bytes
from tests.gcs_server import gcs_emulator


@pytest.fixture(scope="module")
def bucket():
    with gcs_emulator() as uri:
        yield uri


def test_objects_round_trip(bucket):
    write_bytes(f"{bucket}/a/x.bin", b"abc" * 100)
    write_bytes(f"{bucket}/a/b/y.bin", b"z")
    assert read_bytes(f"{bucket}/a/x.bin") == b"abc" * 100
    assert size(f"{bucket}/a/x.bin") == 300 and exists(f"{bucket}/a/b/y.bin")
    assert not exists(f"{bucket}/a/nothing.bin")
    assert sorted(list_files(f"{bucket}/a/")) == [f"{bucket}/a/b/y.bin", f"{bucket}/a/x.bin"]
    with pytest.raises(StorageError, match="not found"):
        read_bytes(f"{bucket}/a/nothing.bin")


def test_video_decoded_and_prepared_from_a_bucket(bucket, tmp_path, capsys):
    from components.data.synth import write_mp4
    from components.video.decode import ClipSpec, decode_clip
    from pipelines.cli import main

    rng = np.random.default_rng(0)
    rows = [["video_path", "label"]]
    for i in range(4):
        local = tmp_path / f"v{i}.mp4"
        write_mp4(local, rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), fps=8)
        write_bytes(f"{bucket}/videos/v{i}.mp4", local.read_bytes())
        rows.append([f"v{i}.mp4", f"class_{i % 2}"])
    clip = decode_clip(f"{bucket}/videos/v1.mp4", ClipSpec(num_frames=4, size=16))
    assert clip.shape == (4, 16, 16, 3)
    with open(tmp_path / "ann.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "m.parquet"
    assert main(["prepare", "csv", "--annotations", f"train={tmp_path / 'ann.csv'}",
                 "--videos", f"{bucket}/videos/", "--out", str(out)]) == 0
    import pyarrow.parquet as pq

    paths = pq.read_table(out).column("video_path").to_pylist()
    assert len(paths) == 4 and all(p.startswith(f"{bucket}/videos/v") for p in paths), paths


def test_missing_google_credentials_is_one_line_naming_the_variable(monkeypatch, tmp_path):
    from components.io import fs

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    monkeypatch.setattr(fs, "_filesystems", {})  # a fresh client reads the environment
    with pytest.raises(StorageError) as err:
        read_bytes("gs://some-bucket/k400/a.mp4")
    line = str(err.value)
    assert "\n" not in line and line.startswith("gs://some-bucket/k400/a.mp4: credentials missing"), line
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line and "STORAGE_EMULATOR_HOST" in line
    assert os.environ["GOOGLE_APPLICATION_CREDENTIALS"].endswith("no-such-key.json")
