"""Annotation converters: tiny files in each native format (real column names and quirks) over
small real videos -> a manifest whose rows decode to the right clip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.config import ConfigError
from components.data.converters import ConverterError, convert
from components.data.manifest import read_manifest
from components.data.synth import write_mp4
from components.video.decode import ClipSpec, decode_clip
from pipelines.cli import main

FPS = 8


def video(path: Path, frames: int = 16) -> Path:
    """A real H.264 video (mp4 container whatever the extension: ffmpeg probes the content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.mp4")
    rng = np.random.default_rng(len(str(path)))
    write_mp4(tmp, rng.integers(0, 256, (frames, 32, 32, 3), dtype=np.uint8), FPS)
    tmp.rename(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def rows_by_id(manifest: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in read_manifest(manifest).table.to_pylist()}


# ---------------------------------------------------------------- Epic-Kitchens-100

EK_HEADER = ["narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
             "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
             "noun_class", "all_nouns", "all_noun_classes"]


@pytest.fixture()
def epic(tmp_path: Path) -> tuple[Path, Path]:
    vids = tmp_path / "videos"
    video(vids / "P01" / "videos" / "P01_01.MP4", frames=40)  # official layout, 5 s
    video(vids / "P02_03.MP4", frames=40)  # flat layout
    ann = tmp_path / "ann"
    ann.mkdir()
    write_csv(ann / "EPIC_100_train.csv", EK_HEADER, [
        ["P01_01_0", "P01", "P01_01", "00:00:00.10", "00:00:00.50", "00:00:02.25", 30, 135,
         "take plate, then cup", "take", 0, "plate", 1, "['plate', 'cup']", "[1, 2]"],
        ["P01_01_1", "P01", "P01_01", "00:00:02.00", "00:00:02.50", "00:00:04.00", 150, 240,
         "open drawer", "open", 2, "drawer", 0, "['drawer']", "[0]"],
        ["P01_01_2", "P01", "P01_01", "00:00:04.00", "00:00:04.50", "00:00:04.50", 270, 270,
         "put plate", "put", 1, "plate", 1, "['plate']", "[1]"],  # empty segment
    ])
    write_csv(ann / "EPIC_100_validation.csv", EK_HEADER, [
        ["P02_03_0", "P02", "P02_03", "00:00:01.00", "00:00:01.00", "00:00:03.50", 60, 210,
         "grab cup", "take", 0, "cup", 2, "['cup']", "[2]"],
    ])
    write_csv(ann / "EPIC_100_verb_classes.csv", ["id", "key", "instances", "category"], [
        [0, "take", "['take', 'grab', 'pick-up']", "retrieve"], [1, "put", "['put']", "leave"],
        [2, "open", "['open']", "access"]])
    write_csv(ann / "EPIC_100_noun_classes.csv", ["id", "key", "instances", "category"], [
        [0, "drawer", "['drawer']", "furniture"], [1, "plate", "['plate']", "cutlery"],
        [2, "cup", "['cup', 'mug']", "cutlery"]])
    return ann, vids


def test_epic_kitchens_segments_classes_and_layouts(epic, tmp_path):
    ann, vids = epic
    out = tmp_path / "ek.parquet"
    report = convert("epic-kitchens-100", sorted(ann.iterdir()), vids, out, missing="skip")
    m = read_manifest(out, required_columns=["label"])
    assert m.class_names == ["take", "put", "open"]  # from the class file, not the raw verbs
    rows = rows_by_id(out)
    assert set(rows) == {"P01_01_0", "P01_01_1", "P02_03_0"}
    r = rows["P01_01_0"]
    assert (r["label"], r["split"], r["start_sec"], r["end_sec"]) == (0, "train", 0.5, 2.25)
    assert r["narration"] == "take plate, then cup" and r["noun_class"] == 1
    assert r["video_path"].endswith("P01/videos/P01_01.MP4")
    assert rows["P02_03_0"]["split"] == "val" and rows["P02_03_0"]["video_path"].endswith("P02_03.MP4")
    # the empty segment is left out, with its file, line and reason in the skip list
    assert [s["clip_id"] for s in report.skipped] == ["P01_01_2"]
    assert "line 4" in report.skipped[0]["where"] and report.skip_list.is_file()
    # the segment decodes from the right frames: [0.5 s, 2.25 s) at 8 fps = frames [4, 18)
    clip = decode_clip(r["video_path"], ClipSpec(num_frames=4, size=32), start_sec=r["start_sec"],
                       end_sec=r["end_sec"])
    assert clip.shape == (4, 32, 32, 3)


def test_epic_kitchens_action_and_noun_labels(epic, tmp_path):
    ann, vids = epic
    files = sorted(ann.iterdir())
    convert("epic-kitchens-100", files, vids, tmp_path / "a.parquet", missing="skip",
            options={"label": "action"})
    m = read_manifest(tmp_path / "a.parquet")
    # (verb, noun) pairs seen: (0,1) (2,0) (1,1) (0,2) -> sorted (0,1) (0,2) (1,1) (2,0)
    assert m.class_names == ["take plate", "take cup", "put plate", "open drawer"]
    rows = rows_by_id(tmp_path / "a.parquet")
    assert rows["P01_01_1"]["label"] == 3 and rows["P02_03_0"]["label"] == 1
    convert("epic-kitchens-100", files, vids, tmp_path / "p.parquet", missing="skip",
            options={"label": "action", "action_index": "product"})
    assert rows_by_id(tmp_path / "p.parquet")["P01_01_1"]["label"] == 2 * 3 + 0
    convert("epic-kitchens-100", files, vids, tmp_path / "n.parquet", missing="skip",
            options={"label": "noun", "use_frames": True})
    r = rows_by_id(tmp_path / "n.parquet")["P01_01_0"]
    assert (r["label"], r["start_frame"], r["end_frame"], r["start_sec"]) == (1, 30, 135, None)


def test_epic_kitchens_errors_name_file_line_and_option(epic, tmp_path):
    ann, vids = epic
    (vids / "P02_03.MP4").unlink()
    with pytest.raises(ConverterError, match=r"EPIC_100_validation.csv, line 2 \(clip_id='P02_03_0'\): "
                                             r"video not found.*--missing skip"):
        convert("epic-kitchens-100", sorted(ann.iterdir()), vids, tmp_path / "x.parquet")
    odd = ann / "segments.csv"
    (ann / "EPIC_100_train.csv").rename(odd)
    with pytest.raises(ConverterError, match="SPLIT=PATH"):
        convert("epic-kitchens-100", [odd], vids, tmp_path / "x.parquet", missing="skip")
    # SPLIT=PATH names the split of an oddly named file
    report = convert("epic-kitchens-100", [f"train={odd}"], vids, tmp_path / "x.parquet", missing="skip")
    assert report.splits == {"train": 2}
    with pytest.raises(ConfigError, match="epic-kitchens-100.lable"):
        convert("epic-kitchens-100", [odd], vids, tmp_path / "x.parquet", options={"lable": "verb"})


# ---------------------------------------------------------------- Kinetics

def test_kinetics_csv_layouts_and_unlabelled_test(tmp_path):
    vids = tmp_path / "k400"
    video(vids / "train" / "passing American football (in game)" / "abc_000010_000020.mp4")
    video(vids / "train" / "abseiling" / "-x_yz_000001_000011.mp4")  # ids may start with '-'
    video(vids / "val" / "def_000003_000013.mkv")  # flat, other container
    video(vids / "test" / "ghi_000000_000010.mp4")
    header = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]
    train = write_csv(tmp_path / "train.csv", header, [
        ["passing American football (in game)", "abc", 10, 20, "train", 0],
        ["abseiling", "-x_yz", 1, 11, "train", 0],
        ["abseiling", "gone", 5, 15, "train", 0]])  # never downloaded
    val = write_csv(tmp_path / "validate.csv", header, [["abseiling", "def", 3, 13, "val", 1]])
    test = write_csv(tmp_path / "test.csv", ["youtube_id", "time_start", "time_end", "split"],
                     [["ghi", 0, 10, "test"]])
    out = tmp_path / "k.parquet"
    report = convert("kinetics", [train, val, test], vids, out, missing="skip")
    m = read_manifest(out)
    assert m.class_names == ["abseiling", "passing American football (in game)"]
    rows = rows_by_id(out)
    assert rows["abc_000010_000020"]["label"] == 1 and rows["-x_yz_000001_000011"]["label"] == 0
    assert rows["def_000003_000013"]["video_path"].endswith(".mkv")
    assert rows["ghi_000000_000010"]["label"] is None and rows["ghi_000000_000010"]["split"] == "test"
    assert [s["clip_id"] for s in report.skipped] == ["gone_000005_000015"]
    # untrimmed: whole YouTube videos, the clip is the annotated segment
    video(tmp_path / "yt" / "abc.mp4", frames=40)
    convert("kinetics", [write_csv(tmp_path / "one_train.csv", header,
                                   [["abseiling", "abc", 1, 3, "train", 0]])],
            tmp_path / "yt", out, options={"trimmed": False})
    r = rows_by_id(out)["abc_000001_000003"]
    assert (r["start_sec"], r["end_sec"]) == (1.0, 3.0)


# ---------------------------------------------------------------- Something-Something v2

def test_ssv2_templates_and_test_split(tmp_path):
    vids = tmp_path / "20bn"
    for i in ("78687", "42326", "1420"):
        video(vids / f"{i}.webm")
    labels = {"Holding something next to something": "1", "Pushing something from left to right": "0"}
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps(labels))
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps([
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks vaporub bottle"]}]))
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps([
        {"id": "42326", "label": "pushing a pen from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a pen"]}]))
    (tmp_path / "something-something-v2-test.json").write_text(json.dumps([{"id": "1420"}]))
    out = tmp_path / "ssv2.parquet"
    convert("ssv2", sorted(tmp_path.glob("*.json")), vids, out)
    assert read_manifest(out).class_names == ["Pushing something from left to right",
                                              "Holding something next to something"]
    rows = rows_by_id(out)
    assert rows["78687"]["label"] == 1 and rows["78687"]["split"] == "train"
    assert rows["78687"]["caption"] == "holding potato next to vicks vaporub bottle"
    assert rows["42326"]["split"] == "val" and rows["1420"]["label"] is None
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps([
        {"id": "78687", "template": "Spinning [something]"}]))
    with pytest.raises(ConverterError, match=r"train.json, entry 0 \(clip_id='78687'\).*Spinning something"):
        convert("ssv2", sorted(tmp_path.glob("*.json")), vids, out)


# ---------------------------------------------------------------- UCF101 / HMDB51

def test_ucf101_split_lists(tmp_path):
    vids = tmp_path / "UCF-101"
    video(vids / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    video(vids / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi")
    video(vids / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    # the real files use CRLF; classInd spells HandstandPushups, file names HandStandPushups
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    (lists / "trainlist01.txt").write_bytes(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
                                            b"HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n")
    (lists / "testlist01.txt").write_bytes(b"HandstandPushups/v_HandStandPushups_g01_c01.avi\r\n")
    (lists / "trainlist02.txt").write_bytes(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\r\n")
    (lists / "testlist02.txt").write_bytes(b"")
    out = tmp_path / "ucf.parquet"
    convert("ucf101", [lists], vids, out, options={"test_split": "val"})
    rows = rows_by_id(out)
    assert read_manifest(out).class_names == ["ApplyEyeMakeup", "HandstandPushups"]
    assert rows["v_HandStandPushups_g08_c01"]["label"] == 1
    assert rows["v_HandStandPushups_g01_c01"]["split"] == "val"
    assert len(rows) == 3
    with pytest.raises(ConverterError, match=r"trainlist02.txt, line 1.*video not found"):
        convert("ucf101", [lists], vids, out, options={"fold": 2})


def test_hmdb51_split_files(tmp_path):
    vids = tmp_path / "hmdb51"
    for cls, name in [("brush_hair", "April_09_brush_hair_u_nm_np1_ba_goo_0.avi"),
                      ("brush_hair", "Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi"),
                      ("cartwheel", "Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi")]:
        video(vids / cls / name)
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text(
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nBrushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi 2 \n"
        "Unused_brush_hair_u_nm_np1_ba_goo_1.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text("Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi 1 \n")
    (splits / "cartwheel_test_split2.txt").write_text("Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi 2 \n")
    out = tmp_path / "hmdb.parquet"
    report = convert("hmdb51", [splits], vids, out)
    rows = rows_by_id(out)
    assert read_manifest(out).class_names == ["brush_hair", "cartwheel"]
    assert {k: (r["label"], r["split"]) for k, r in rows.items()} == {
        "April_09_brush_hair_u_nm_np1_ba_goo_0": (0, "train"),
        "Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0": (0, "test"),
        "Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8": (1, "train")}
    assert [s["clip_id"] for s in report.skipped] == ["Unused_brush_hair_u_nm_np1_ba_goo_1"]


# ---------------------------------------------------------------- MPIIGI / UDIVA / generic

def test_mpii_group_interaction_multi_hot(tmp_path):
    vids = tmp_path / "mpiigi"
    video(vids / "rec01" / "subject1.mp4", frames=40)
    ann = write_csv(tmp_path / "bbsi_train.csv",
                    ["video", "start_frame", "end_frame", "participant", "gesture", "hand-face", "fumbling"],
                    [["rec01/subject1.mp4", 0, 16, "1", 1, 0, 1], ["rec01/subject1.mp4", 16, 32, "1", 0, 0, 0]])
    out = tmp_path / "gi.parquet"
    convert("mpii-group-interaction", [ann], vids, out)
    m = read_manifest(out, required_columns=["multi_label"])
    assert m.class_names == ["gesture", "hand-face", "fumbling"]
    rows = rows_by_id(out)
    assert rows["subject1_0_16"]["multi_label"] == [0, 2] and rows["subject1_16_32"]["multi_label"] == []
    bad = write_csv(tmp_path / "bbsi_val.csv", ["video", "start_frame", "end_frame", "gesture"],
                    [["rec01/subject1.mp4", 0, 8, "yes"]])
    with pytest.raises(ConverterError, match=r"bbsi_val.csv, line 2.*'gesture' must be 0 or 1"):
        convert("mpii-group-interaction", [bad], vids, out, options={"classes": ["gesture"]})


def test_udiva_ocean_targets_per_participant(tmp_path):
    vids = tmp_path / "recordings"
    for k in (1, 2):
        video(vids / "talk" / "001080" / f"FC{k}_T.mp4", frames=40)
    traits = ["OPENNESS", "CONSCIENTIOUSNESS", "EXTRAVERSION", "AGREEABLENESS", "NEUROTICISM"]
    parts = write_csv(tmp_path / "parts_train.csv", ["ID", "AGE"] + traits,
                      [["12", 30, 0.1, 0.2, 0.3, 0.4, 0.5], ["34", 40, 0.9, 0.8, 0.7, 0.6, 0.5]])
    sessions = write_csv(tmp_path / "sessions_train.csv", ["ID", "PART.1", "PART.2"], [["1080", "12", "34"]])
    out = tmp_path / "udiva.parquet"
    convert("udiva", [parts, sessions], vids, out, options={"tasks": ["talk"]})
    m = read_manifest(out, required_columns=["regression"])
    assert m.regression_names == [t.lower() for t in traits]
    rows = rows_by_id(out)
    assert rows["001080_talk_FC2"]["regression"] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert rows["001080_talk_FC1"]["participant"] == "12"
    convert("udiva", [parts, sessions], vids, out, options={"tasks": ["talk"], "window_sec": 2.0})
    rows = rows_by_id(out)  # 40 frames at 8 fps = 5 s -> two 2 s windows per recording
    assert sorted(rows) == ["001080_talk_FC1_0000", "001080_talk_FC1_0001",
                            "001080_talk_FC2_0000", "001080_talk_FC2_0001"]
    assert (rows["001080_talk_FC1_0001"]["start_sec"], rows["001080_talk_FC1_0001"]["end_sec"]) == (2.0, 4.0)


def test_generic_csv_mapping(tmp_path):
    vids = tmp_path / "v"
    video(vids / "a.mp4", frames=40)
    video(vids / "b.mp4")
    ann = write_csv(tmp_path / "clips.csv", ["file", "cls", "tags", "t0", "t1", "score", "part"], [
        ["a.mp4", "run", "outdoor;fast", "00:00:01.0", "00:00:03.5", 0.5, "train"],
        ["b.mp4", "walk", "indoor", "", "", 1.5, "validation"]])
    out = tmp_path / "g.parquet"
    convert("csv", [ann], vids, out, relative_paths=True, dataset="mine", options={
        "video_column": "file", "label_column": "cls", "multi_label_column": "tags",
        "regression_columns": ["score"], "split_column": "part", "start_column": "t0",
        "end_column": "t1", "time_unit": "timestamp"})
    m = read_manifest(out)
    # one class list covers both label columns: sorted names
    assert m.class_names == ["fast", "indoor", "outdoor", "run", "walk"] and m.regression_names == ["score"]
    rows = rows_by_id(out)
    a = rows["a_1.0_3.5"]
    assert (a["label"], a["multi_label"], a["start_sec"], a["end_sec"]) == (3, [0, 2], 1.0, 3.5)
    assert a["dataset"] == "mine" and rows["b"]["split"] == "val"
    assert pq.read_table(out)["video_path"].to_pylist() == ["v/a.mp4", "v/b.mp4"]  # --relative-paths


def test_prepare_cli(tmp_path, capsys):
    vids = tmp_path / "v"
    video(vids / "a.mp4")
    ann = write_csv(tmp_path / "train.csv", ["video_path", "label"], [["a.mp4", 1], ["gone.mp4", 0]])
    out = tmp_path / "m.parquet"
    assert main(["prepare", "csv", "--annotations", str(ann), "--videos", str(vids), "--out", str(out)]) == 2
    assert "train.csv, line 3 (clip_id='gone')" in capsys.readouterr().err
    assert main(["prepare", "csv", "--annotations", str(ann), "--videos", str(vids), "--out", str(out),
                 "--missing", "skip", "--set", "label_type=index"]) == 0
    assert "skipped 1 row(s)" in capsys.readouterr().out
    assert read_manifest(out).num_classes == 2 and len(read_manifest(out)) == 1
    assert main(["prepare", "nope", "--annotations", str(ann)]) == 2


# ---- labels are never invented (#18) ---------------------------------------------------------------

@pytest.mark.parametrize("rows,options,message", [
    ([["a.mp4", "0"], ["b.mp4", "999"]], {"label_type": "index"}, "line 3: label 999 would make 1000 classes"),
    ([["a.mp4", "run"], ["b.mp4", "nan"]], {}, "line 3: empty or NaN label in column 'label'"),
    ([["a.mp4", "0"], ["b.mp4", "nan"]], {"label_type": "index"}, "line 3: empty or NaN label"),
    ([["a.mp4", "0"], ["b.mp4", ""]], {}, "line 3: empty or NaN label"),
    ([["a.mp4", "0"], ["b.mp4", "1.5"]], {"label_type": "index"}, "line 3: column 'label': '1.5' is not an integer"),
    ([["a.mp4", "0"], ["b.mp4", "7"]], {"classes_file": "CLASSES"}, "line 3 (clip_id='b'): label 7 outside [0, 2)"),
    ([["a.mp4", "0"], ["b.mp4", "1"]], {"label_column": "action"}, "missing column(s) ['action']"),
])
def test_csv_labels_are_never_invented(tmp_path, capsys, rows, options, message):
    vids = tmp_path / "v"
    for name in ("a", "b"):
        video(vids / f"{name}.mp4")
    (tmp_path / "classes.txt").write_text("zero\none\n")
    ann = write_csv(tmp_path / "train.csv", ["video_path", "label"], rows)
    sets = [x for k, v in options.items()
            for x in ("--set", f"{k}={tmp_path / 'classes.txt' if v == 'CLASSES' else v}")]
    rc = main(["prepare", "csv", "--annotations", str(ann), "--videos", str(vids), "--out", str(tmp_path / "m.parquet"),
               *sets])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and str(ann) in err and message in err, err
    assert not (tmp_path / "m.parquet").exists()


def test_csv_index_labels_count_the_classes_seen(tmp_path):
    vids = tmp_path / "v"
    for name in ("a", "b", "c"):
        video(vids / f"{name}.mp4")
    ann = write_csv(tmp_path / "train.csv", ["video_path", "label"], [["a.mp4", 0], ["b.mp4", 2], ["c.mp4", 1]])
    convert("csv", [ann], vids, tmp_path / "m.parquet")
    assert read_manifest(tmp_path / "m.parquet").num_classes == 3
