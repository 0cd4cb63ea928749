"""`vidpeft check-videos`: a parallel scan that names every unusable file and clip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from components.data.manifest import read_manifest, write_manifest
from components.data.synth import write_mp4
from pipelines.data.check_videos import check_manifest, check_video
from pipelines.cli import main


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    """Two good videos (16 frames at 8 fps = 2 s) and every kind of bad one, in two datasets."""
    root = tmp_path_factory.mktemp("messy")
    rng = np.random.default_rng(0)
    for name in ("good1", "good2"):
        write_mp4(root / f"{name}.mp4", rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), 8)
    data = (root / "good1.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    rows = [
        {"clip_id": "a", "video_path": "good1.mp4", "dataset": "ds1"},
        {"clip_id": "a2", "video_path": "good1.mp4", "dataset": "ds1", "start_sec": 0.5, "end_sec": 1.5},
        {"clip_id": "late", "video_path": "good1.mp4", "dataset": "ds1", "start_sec": 5.0, "end_sec": 6.0},
        {"clip_id": "b", "video_path": "good2.mp4", "dataset": "ds2"},
        {"clip_id": "t", "video_path": "truncated.mp4", "dataset": "ds1"},
        {"clip_id": "e", "video_path": "empty.mp4", "dataset": "ds2"},
        {"clip_id": "g", "video_path": "garbage.mp4", "dataset": "ds2"},
        {"clip_id": "m", "video_path": "missing.mp4", "dataset": "ds2"},
    ]
    rows = [{"split": "train", "label": 0, **r} for r in rows]
    return write_manifest(root / "manifest.parquet", rows, ["x"])


def test_check_video_reasons(messy):
    root = messy.parent
    assert check_video(str(root / "good1.mp4")).ok
    assert check_video(str(root / "good1.mp4")).frames == 16
    assert check_video(str(root / "empty.mp4")).reason == "empty (zero-byte) file"
    assert check_video(str(root / "missing.mp4")).reason == "file not found"
    assert "cannot open video" in check_video(str(root / "garbage.mp4")).reason
    assert not check_video(str(root / "truncated.mp4"), quick=True).ok


def test_parallel_scan_counts_per_dataset(messy):
    report, bad_ids = check_manifest(messy, workers=2)
    assert bad_ids == {"late", "t", "e", "g", "m"}
    assert report.videos == 6 and report.bad_videos == 4 and report.bad_clips == 5
    assert report.by_dataset == {
        "ds1": {"videos": 2, "bad_videos": 1, "clips": 4, "bad_clips": 2},
        "ds2": {"videos": 4, "bad_videos": 3, "clips": 4, "bad_clips": 3}}
    by_path = {Path(b["path"]).name: b for b in report.bad}
    assert by_path["good1.mp4"]["reason"].startswith("clip range outside the video")
    assert by_path["good1.mp4"]["clip_ids"] == ["late"]
    assert by_path["missing.mp4"]["datasets"] == ["ds2"]


def test_cli_writes_reports_and_clean_manifest(messy, tmp_path, capsys):
    report, table, clean = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "clean" / "m.parquet"
    args = ["check-videos", str(messy), "--workers", "1", "--report", str(report), "--csv", str(table)]
    assert main(args + ["--clean", str(clean)]) == 1  # bad files found
    out = capsys.readouterr().out
    assert "ds2: 3/4 bad videos" in out and "empty.mp4: empty (zero-byte) file" in out
    data = json.loads(report.read_text())
    assert data["bad_clips"] == 5
    with open(table) as f:
        listed = {Path(r["path"]).name for r in csv.DictReader(f)}
    assert listed == {"good1.mp4", "truncated.mp4", "empty.mp4", "garbage.mp4", "missing.mp4"}
    m = read_manifest(clean)  # written elsewhere: paths still resolve, every file exists
    assert sorted(m.table["clip_id"].to_pylist()) == ["a", "a2", "b"]
    assert main(args + ["--no-fail", "--quick"]) == 0
    assert main(["check-videos", str(clean), "--workers", "1", "--report", str(report),
                 "--csv", str(table)]) == 0


def test_ingest_skips_bad_clips_per_dataset_and_logs_paths(synth_data, caplog):
    """The training path: broken files come out flagged (ok=False) with their dataset index, and
    the log names the file; the batch goes on."""
    from pipelines.data.ingest import ClipDecoder, DecodeSettings

    table = read_manifest(synth_data).table
    bad = table.filter(pc.starts_with(table["clip_id"], "corrupt"))
    rows = table.slice(0, 2).to_pylist() + bad.to_pylist()
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    settings = DecodeSettings(num_frames=4, size=32, sampling="uniform", stride=2, training=False, seed=0,
                              task="single_label", num_outputs=4, datasets=("other", "synthetic_motion"))
    with caplog.at_level("WARNING", logger="vidpeft.ingest"):
        out = ClipDecoder(settings)(batch)
    assert out["ok"].tolist() == [True, True, False, False]
    assert out["dataset_index"].tolist() == [1, 1, 1, 1]
    for r in bad.to_pylist():
        assert any(r["video_path"] in m and "synthetic_motion" in m for m in caplog.messages)


def test_a_bad_clip_is_reported_once_and_counted_every_epoch(synth_data, caplog):
    """The decoder actor lives for the whole run and meets a broken file every epoch: it says so the
    first time and flags the clip (which the metrics count) every time."""
    from pipelines.data.ingest import ClipDecoder, DecodeSettings

    table = read_manifest(synth_data).table
    rows = table.filter(pc.starts_with(table["clip_id"], "corrupt")).to_pylist()
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    settings = DecodeSettings(num_frames=4, size=32, sampling="uniform", stride=2, training=False, seed=0,
                              task="single_label", num_outputs=4)
    decoder = ClipDecoder(settings)
    with caplog.at_level("WARNING", logger="vidpeft.ingest"):
        flags = [decoder(batch)["ok"].tolist() for _epoch in range(3)]
    assert flags == [[False] * len(rows)] * 3
    for r in rows:
        assert sum(r["video_path"] in m for m in caplog.messages) == 1, caplog.messages
