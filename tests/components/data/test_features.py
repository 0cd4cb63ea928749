"""Side-modality features joined to manifest clips: per clip, per video over time, missing ones."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.data.features import FeatureError, FeatureSource, add_features, attach_features, window_mean
from components.data.manifest import read_manifest, write_manifest


def manifest_table(rows: list[dict]) -> pa.Table:
    base = {"split": "train", "dataset": "d", "label": 0}
    return pa.Table.from_pylist([{**base, **r} for r in rows])


def test_per_clip_parquet_and_npy_with_missing(tmp_path):
    table = manifest_table([{"clip_id": "a", "video_path": "v/a.mp4"}, {"clip_id": "b", "video_path": "v/b.mp4"},
                            {"clip_id": "c", "video_path": "v/c.mp4"}])
    pq.write_table(pa.table({"id": ["a", "c"], "feature": [[1.0, 2.0], [float("nan"), 0.0]]}),
                   tmp_path / "audio.parquet")
    npy = tmp_path / "flow"
    npy.mkdir()
    np.save(npy / "b.npy", np.array([[1, 2, 3], [3, 4, 5]], dtype=np.float32))  # (N, D): averaged
    out, stats = attach_features(table, [FeatureSource("audio", str(tmp_path / "audio.parquet")),
                                         FeatureSource("flow", str(npy))])
    assert out["feat_audio"].to_pylist() == [[1.0, 2.0], None, None]  # c had a NaN: missing
    assert out["feat_flow"].to_pylist() == [None, [2.0, 3.0, 4.0], None]
    assert out.schema.field("feat_flow").type == pa.list_(pa.float32())
    audio, flow = stats
    assert (audio.dim, audio.present, audio.missing, audio.invalid) == (2, 1, 2, 1)
    assert (flow.dim, flow.present) == (3, 1)


def test_time_aligned_sequences_average_over_the_clip(tmp_path):
    # one video, features at 1 row/s: row i = [i] covering [i, i+1) s
    table = manifest_table([
        {"clip_id": "s1", "video_path": "vids/P01_01.MP4", "start_sec": 1.0, "end_sec": 3.0},
        {"clip_id": "s2", "video_path": "vids/P01_01.MP4", "start_sec": 4.2, "end_sec": 4.4},  # < 1 step
        {"clip_id": "whole", "video_path": "vids/P01_01.MP4"},
        {"clip_id": "other", "video_path": "vids/P09_09.MP4", "start_sec": 0.0, "end_sec": 1.0}])
    seq = tmp_path / "audio"
    seq.mkdir()
    np.save(seq / "P01_01.npy", np.arange(6, dtype=np.float32)[:, None])
    out, _ = attach_features(table, [FeatureSource("audio", str(seq), time_aligned=True)])
    # step centres 0.5, 1.5, ...: [1, 3) holds rows 1 and 2; [4.2, 4.4) holds none -> nearest (row 4)
    assert out["feat_audio"].to_pylist() == [[1.5], [4.0], [2.5], None]
    # the same as Parquet rows (video stem, time, feature), at 2 rows per second
    times = np.arange(12) / 2
    pq.write_table(pa.table({"id": ["P01_01"] * 12, "time": times, "feature": [[t] for t in times]}),
                   tmp_path / "seq.parquet")
    out, _ = attach_features(table, [FeatureSource("audio", str(tmp_path / "seq.parquet"), time_aligned=True)])
    assert out["feat_audio"].to_pylist()[0] == [pytest.approx(1.75)]  # rows at 1.0, 1.5, 2.0, 2.5


def test_window_mean_far_window_is_missing():
    times = np.array([0.5, 1.5])
    values = np.array([[1.0], [2.0]], dtype=np.float32)
    assert window_mean(times, values, 10.0, 11.0) is None
    assert window_mean(times, values, None, None).tolist() == [1.5]


def test_errors_name_the_source(tmp_path):
    table = manifest_table([{"clip_id": "a", "video_path": "a.mp4"}, {"clip_id": "b", "video_path": "b.mp4"}])
    pq.write_table(pa.table({"id": ["a", "b"], "feature": [[1.0], [1.0, 2.0]]}), tmp_path / "f.parquet")
    with pytest.raises(FeatureError, match=r"f.parquet: key 'b' has dim 2"):
        attach_features(table, [FeatureSource("x", str(tmp_path / "f.parquet"))])
    pq.write_table(pa.table({"id": ["zz"], "feature": [[1.0]]}), tmp_path / "g.parquet")
    with pytest.raises(FeatureError, match="matched no clip by clip_id"):
        attach_features(table, [FeatureSource("x", str(tmp_path / "g.parquet"))])


def test_add_features_keeps_metadata_and_validates(tmp_path):
    rows = [{"clip_id": "a", "video_path": "a.mp4", "split": "train", "dataset": "d", "label": 1},
            {"clip_id": "b", "video_path": "b.mp4", "split": "val", "dataset": "d", "label": 0}]
    path = write_manifest(tmp_path / "m.parquet", rows, ["x", "y"])
    pq.write_table(pa.table({"id": ["b"], "feature": [[0.5, 0.25]]}), tmp_path / "t.parquet")
    add_features(path, [FeatureSource("text", str(tmp_path / "t.parquet"))])
    m = read_manifest(path, check_files=False, feature_columns=["feat_text"])
    assert m.class_names == ["x", "y"] and m.feature_dims == {"feat_text": 2}
    assert m.table["feat_text"].to_pylist() == [None, [0.5, 0.25]]


def test_prepare_cli_joins_features(tmp_path, capsys):
    import csv

    from pipelines.cli import main

    (tmp_path / "v").mkdir()
    for name in ("a", "b"):
        (tmp_path / "v" / f"{name}.mp4").write_bytes(b"not checked by prepare")
    with open(tmp_path / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video_path", "label"], ["a.mp4", "x"], ["b.mp4", "y"]])
    pq.write_table(pa.table({"id": ["a"], "feature": [[1.0, 2.0, 3.0]]}), tmp_path / "audio.parquet")
    out = tmp_path / "m.parquet"
    assert main(["prepare", "csv", "--annotations", str(tmp_path / "train.csv"), "--videos", str(tmp_path / "v"),
                 "--out", str(out), "--feature", f"audio={tmp_path / 'audio.parquet'}"]) == 0
    assert "feat_audio: dim 3, 1 clips with it, 1 without" in capsys.readouterr().out
    m = read_manifest(out, feature_columns=["feat_audio"])
    assert m.table["feat_audio"].to_pylist() == [[1.0, 2.0, 3.0], None]
    assert main(["prepare", "csv", "--annotations", str(tmp_path / "train.csv"), "--videos", str(tmp_path / "v"),
                 "--out", str(out), "--feature", "audio"]) == 2


def _csv_dataset(tmp_path, rows):
    """Videos a.mp4, b.mp4, c.mp4 (prepare does not decode them) and train.csv with `rows`."""
    import csv

    (tmp_path / "v").mkdir(exist_ok=True)
    for name in ("a", "b", "c"):
        (tmp_path / "v" / f"{name}.mp4").write_bytes(b"not checked by prepare")
    with open(tmp_path / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video_path", "label", "audio_file"], *rows])
    return ["prepare", "csv", "--annotations", str(tmp_path / "train.csv"), "--videos", str(tmp_path / "v"),
            "--out", str(tmp_path / "m.parquet")]


def test_prepare_csv_reads_a_feature_path_per_row(tmp_path, capsys):
    from pipelines.cli import main

    (tmp_path / "feats").mkdir()
    np.save(tmp_path / "feats" / "one.npy", np.array([1.0, 2.0], dtype=np.float32))
    np.save(tmp_path / "feats" / "two.npy", np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32))  # (N, D)
    args = _csv_dataset(tmp_path, [["a.mp4", "x", "feats/one.npy"],  # relative to the CSV's folder
                                   ["b.mp4", "y", ""],  # no feature for this clip
                                   ["c.mp4", "x", str(tmp_path / "feats" / "two.npy")]])  # absolute
    assert main(args + ["--feature", "audio=audio_file"]) == 0
    assert "feat_audio: dim 2, 2 clips with it, 1 without" in capsys.readouterr().out
    m = read_manifest(tmp_path / "m.parquet", feature_columns=["feat_audio"])
    assert m.table["feat_audio"].to_pylist() == [[1.0, 2.0], None, [1.0, 2.0]]
    assert "audio_file" not in m.table.column_names  # the path column is not copied as text


@pytest.mark.parametrize("feature, message", [
    ("audio=nope", "feature column 'nope' is not in the header"),  # neither a column nor a file
    ("audio=audio_file", "gone.npy (from column 'audio_file') not found"),  # a row names a missing file
])
def test_prepare_that_fails_leaves_no_manifest(tmp_path, capsys, feature, message):
    from pipelines.cli import main

    args = _csv_dataset(tmp_path, [["a.mp4", "x", "gone.npy"], ["b.mp4", "y", ""]])
    assert main(args + ["--feature", feature]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv", "v"]  # no manifest, no temp file
    # a manifest from an earlier run is left as it was
    assert main(args) == 0
    before = (tmp_path / "m.parquet").read_bytes()
    assert main(args + ["--feature", feature]) == 2
    assert (tmp_path / "m.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet", "train.csv", "v"]
