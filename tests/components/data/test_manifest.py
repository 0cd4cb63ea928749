"""Manifest contract: round trip, path resolution, and errors naming path/row/column."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.data.manifest import (METADATA_KEY, ManifestError, read_manifest,
                                      write_manifest)

CLASSES = ["a", "b", "c"]


def _rows(tmp_path: Path, n: int = 4) -> list[dict]:
    (tmp_path / "videos").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        (tmp_path / "videos" / f"v{i}.mp4").write_bytes(b"x")
        rows.append({"clip_id": f"c{i}", "video_path": f"videos/v{i}.mp4",
                     "split": "train" if i % 2 == 0 else "val", "dataset": "ds" if i < 3 else "ds2",
                     "label": i % 3, "start_frame": None if i else 2, "end_frame": None if i else 9,
                     "multi_label": [0, 2] if i == 1 else None,
                     "feat_audio": [0.5, 1.0] if i != 2 else None})
    return rows


def test_round_trip_and_relative_paths(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.parquet", _rows(tmp_path), CLASSES)
    m = read_manifest(path, required_columns=("label",), feature_columns=("feat_audio",))
    assert m.num_classes == 3 and m.class_names == CLASSES
    assert m.feature_dims == {"feat_audio": 2}  # inferred from the list<float> column
    assert m.table["video_path"][1].as_py() == str(tmp_path / "videos" / "v1.mp4")
    assert m.table["start_frame"].to_pylist() == [2, None, None, None]
    assert m.table["multi_label"][1].as_py() == [0, 2]
    assert m.table["feat_audio"][2].as_py() is None
    assert m.table.schema.field("feat_audio").type == pa.list_(pa.float32())
    assert m.table.schema.field("start_sec").type == pa.float64()  # absent -> filled with nulls
    assert m.split("val")["clip_id"].to_pylist() == ["c1", "c3"]
    s = m.summary()
    assert s["rows"] == 4 and s["splits"] == {"train": 2, "val": 2}
    assert s["datasets"] == {"ds": 3, "ds2": 1}
    assert s["split_dataset"]["val"] == {"ds": 1, "ds2": 1}
    meta = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    assert meta == {"version": 1, "class_names": CLASSES, "num_classes": 3,
                    "feature_dims": {"feat_audio": 2}}
    # Relative paths resolve against the manifest's own dir, not the cwd: relocatable.
    moved = tmp_path / "copy"
    moved.mkdir()
    (moved / "videos").symlink_to(tmp_path / "videos")
    m2 = read_manifest(write_manifest(moved / "m.parquet", _rows(tmp_path), CLASSES))
    assert m2.table["video_path"][0].as_py() == str(moved / "videos" / "v0.mp4")


def test_write_from_table_and_absolute_paths(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 2)
    for r in rows:
        r["video_path"] = str(tmp_path / r["video_path"])
        del r["multi_label"], r["feat_audio"]
    table = pa.Table.from_pylist(rows)  # int64/string inferred; start_frame all-but-one null
    m = read_manifest(write_manifest(tmp_path / "sub" / "m.parquet", table, CLASSES))
    assert m.table["video_path"].to_pylist() == [r["video_path"] for r in rows]
    assert not list((tmp_path / "sub").glob("*.tmp"))  # atomic write leaves no temp file


def _expect(tmp_path: Path, rows: list[dict], row: int | None, column: str, text: str,
            **kw) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        path = write_manifest(tmp_path / "m.parquet", rows, CLASSES,
                              feature_dims=kw.pop("feature_dims", None))
        read_manifest(path, **kw)
    err = info.value
    msg = str(err)
    assert "m.parquet" in msg and f"column {column!r}" in msg and text in msg, msg
    assert err.column == column and err.row == row
    if row is not None:
        assert f"row {row}" in msg and f"clip_id={rows[row]['clip_id']!r}" in msg
    return err


@pytest.mark.parametrize("mutate,row,column,text", [
    (lambda rs: [r.pop("dataset") for r in rs], None, "dataset", "missing required column"),
    (lambda rs: rs[2].update(split=None), 2, "split", "null in required column"),
    (lambda rs: rs[3].update(clip_id="c1"), 3, "clip_id", "duplicate clip_id"),
    (lambda rs: rs[1].update(split="training"), 1, "split", "unknown split"),
    (lambda rs: rs[2].update(label=3), 2, "label", "out of range [0, 3)"),
    (lambda rs: rs[3].update(label=-1), 3, "label", "out of range"),
    (lambda rs: rs[3].update(multi_label=[1, 7]), 3, "multi_label", "out of range"),
    (lambda rs: rs[0].update(end_frame=2), 0, "end_frame", "<="),
    (lambda rs: rs[1].update(start_sec=2.0, end_sec=1.0), 1, "end_sec", "<="),
    (lambda rs: rs[3].update(feat_audio=[1.0, 2.0, 3.0]), 3, "feat_audio", "length"),
    (lambda rs: rs[1].update(feat_audio=[float("nan"), 0.0]), 1, "feat_audio", "non-finite"),
])
def test_validation_errors_name_row_and_column(tmp_path, mutate, row, column, text) -> None:
    rows = _rows(tmp_path)
    mutate(rows)
    _expect(tmp_path, rows, row, column, text)


def test_wrong_type_and_required_columns(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    table = pa.Table.from_pylist([{**r, "label": str(r["label"])} for r in rows])
    with pytest.raises(ManifestError, match=r"column 'label': wrong type string"):
        write_manifest(tmp_path / "m.parquet", table, CLASSES)
    rows = _rows(tmp_path)
    rows[2]["label"] = None  # nullable normally, but a caller may require it
    path = write_manifest(tmp_path / "m.parquet", rows, CLASSES)
    read_manifest(path)
    with pytest.raises(ManifestError, match=r"row 2 \(clip_id='c2'\), column 'label': null"):
        read_manifest(path, required_columns=("label",))
    with pytest.raises(ManifestError, match=r"column 'feat_video': missing required column"):
        read_manifest(path, feature_columns=("feat_video",))


def test_feature_dim_vs_metadata(tmp_path: Path) -> None:
    _expect(tmp_path, _rows(tmp_path), 0, "feat_audio", "declared dim 3",
            feature_dims={"feat_audio": 3})


def test_missing_video_file(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    path = write_manifest(tmp_path / "m.parquet", rows, CLASSES)
    (tmp_path / "videos" / "v2.mp4").unlink()
    read_manifest(path, check_files=False)
    err = _expect(tmp_path, rows, 2, "video_path", "video file not found")
    assert pickle.loads(pickle.dumps(err)).row == 2  # crosses process boundaries intact


def test_bad_file_and_metadata(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest file not found"):
        read_manifest(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="junk.parquet.*not a readable Parquet"):
        read_manifest(tmp_path / "junk.parquet")
    pq.write_table(pa.Table.from_pylist(_rows(tmp_path)), tmp_path / "plain.parquet")
    with pytest.raises(ManifestError, match="missing Parquet schema metadata key 'vidpeft'"):
        read_manifest(tmp_path / "plain.parquet")


def test_large_manifest_validates_quickly(tmp_path: Path) -> None:
    import time
    n = 100_000
    table = pa.table({"clip_id": [f"c{i}" for i in range(n)], "video_path": ["/v.mp4"] * n,
                      "split": ["train"] * n, "dataset": ["ds"] * n,
                      "label": [i % 3 for i in range(n)],
                      "feat_audio": pa.array([[0.0, 1.0]] * n, pa.list_(pa.float32()))})
    t0 = time.perf_counter()
    m = read_manifest(write_manifest(tmp_path / "m.parquet", table, CLASSES), check_files=False)
    assert len(m) == n and time.perf_counter() - t0 < 5.0
