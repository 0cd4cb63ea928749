"""A corpus of bad inputs, generated here, through `prepare`, `check-videos`, `train` and `zeroshot`.

Each one ends as a user needs: exit code 2 with one line naming the input (the file, row, or config
key), or, for a broken video, skipped and counted. Never a traceback, never Ray started for an input
the driver can check, never a file that runs code when loaded, never a lost file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from components.data.synth import write_mp4
from pipelines.cli import main
from tests.conftest import TINY_VIT, own_lines
from tests.components.test_config_safety import evil_file

ROOT = Path(__file__).resolve().parents[3]
TINY = "{" + ", ".join(f"{k}: {v}" for k, v in TINY_VIT.items() if k != "kwargs") + ", kwargs: {patch_size: 8, " \
       "embed_dim: 32, depth: 2, num_heads: 2}}"


@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if a command starts (or joins) Ray: every input here is checkable on the driver."""
    import pipelines.run.train
    import pipelines.infer.zeroshot

    def started(*_a, **_k):
        raise AssertionError("Ray was started for an input the driver could have checked")

    monkeypatch.setattr(pipelines.run.train, "ensure_ray", started)
    monkeypatch.setattr(pipelines.infer.zeroshot, "ensure_ray", started)


def run_cli(capsys, args: list[str]) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return rc, own_lines(out.err).strip()


def assert_one_line(rc: int, err: str, names: str) -> None:
    assert rc == 2, err
    assert err.count("\n") == 0 and err.startswith("vidpeft: error: "), err
    assert names in err, (names, err)


# ---- broken videos: check-videos counts each one ---------------------------------------------------------

def broken_videos(root: Path) -> dict[str, Path]:
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    good = root / "good.mp4"
    write_mp4(good, np.zeros((8, 32, 32, 3), np.uint8), fps=8)
    data = good.read_bytes()
    cases = {"zero_bytes": b"", "truncated": data[: len(data) // 3], "header_only": data[:64],
             "random_bytes": bytes(range(256)) * 40, "text": b"this is not a video\n"}
    out = {name: root / f"{name}.mp4" for name in cases}
    for name, content in cases.items():
        out[name].write_bytes(content)
    out["missing"] = root / "missing.mp4"
    (root / "directory.mp4").mkdir(exist_ok=True)
    out["directory"] = root / "directory.mp4"
    out["good"] = good
    return out


def test_broken_videos_are_counted_by_check_videos(tmp_path, capsys):
    from components.data.manifest import write_manifest

    videos = broken_videos(tmp_path / "v")
    rows = [{"clip_id": name, "video_path": str(p), "split": "train", "dataset": "x", "label": 0}
            for name, p in videos.items()]
    write_manifest(tmp_path / "m.parquet", rows, ["a"], feature_dims={})
    rc = main(["check-videos", str(tmp_path / "m.parquet"), "--workers", "1"])
    out = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out.out + out.err  # 1 = bad files found, each listed
    assert f"{len(videos) - 1}/{len(videos)} bad videos" in out.out
    for name, path in videos.items():
        assert (f"  {path}: " in out.out) == (name != "good"), name


# ---- bad CSVs: prepare names the file and line ----------------------------------------------------------------

CSV_CASES = {
    "label_out_of_class_list": ([["a.mp4", "0"], ["b.mp4", "5"]], ["--set", "label_type=index", "--set",
                                                                     "classes_file=CLASSES"], "line 3"),
    "stray_large_index": ([["a.mp4", "0"], ["b.mp4", "999"]], ["--set", "label_type=index"], "line 3"),
    "nan_label": ([["a.mp4", "x"], ["b.mp4", "nan"]], [], "line 3"),
    "nan_index_label": ([["a.mp4", "0"], ["b.mp4", "NaN"]], ["--set", "label_type=index"], "line 3"),
    "empty_label": ([["a.mp4", "x"], ["b.mp4", ""]], [], "line 3"),
    "missing_label_column": ([["a.mp4", "x"]], ["--set", "label_column=action"], "'action'"),
    "missing_video_column": ([["a.mp4", "x"]], ["--set", "video_column=file"], "'file'"),
    "bad_split": ([["a.mp4", "x", "holdout"]], [], "line 2"),
    "duplicate_clip": ([["a.mp4", "x"], ["a.mp4", "y"]], [], "line 3"),
    "missing_video": ([["a.mp4", "x"], ["gone.mp4", "y"]], [], "line 3"),
    "empty_video_cell": ([["", "x"]], [], "line 2"),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES) + ["empty_file", "binary_file", "not_utf8", "absent_file"])
def test_bad_csvs_are_one_line_naming_file_and_line(tmp_path, capsys, case):
    vids = tmp_path / "v"
    vids.mkdir()
    for name in ("a", "b"):
        (vids / f"{name}.mp4").write_bytes(b"not checked by prepare")
    (tmp_path / "classes.txt").write_text("zero\none\n")
    ann = tmp_path / "train.csv"
    extra, where = [], ""
    if case in CSV_CASES:
        rows, extra, where = CSV_CASES[case]
        header = ["video_path", "label"] + (["split"] if case == "bad_split" else [])
        with open(ann, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
        extra = [f"classes_file={tmp_path / 'classes.txt'}" if e == "classes_file=CLASSES" else e for e in extra]
    elif case == "empty_file":
        ann.write_bytes(b"")
    elif case == "binary_file":
        ann.write_bytes(bytes(range(256)) * 4)
    elif case == "not_utf8":
        ann.write_bytes("video_path,label\nä.mp4,x\n".encode("latin-1"))
    out = tmp_path / "m.parquet"
    rc, err = run_cli(capsys, ["prepare", "csv", "--annotations", ann, "--videos", vids, "--out", out, *extra])
    assert_one_line(rc, err, str(ann))
    assert where in err
    assert not out.exists()  # nothing half-written


# ---- bad configs and weights: train stops before Ray -----------------------------------------------------------

def train_args(synth_data, out: Path, *extra) -> list:
    return ["train", "--set", f"model.backbone={TINY}", "--set", f"data.manifest={synth_data}",
            "--set", f"output_dir={out}", "--set", "tracking.enabled=false", *extra]


def weight_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error must name)."""
    from components.backbones.config import BackboneConfig
    from components.backbones.registry import build_backbone
    from components.config import from_dict

    evil, _ = evil_file(tmp_path)
    wide = dict(TINY_VIT, kwargs={**TINY_VIT["kwargs"], "embed_dim": 48})
    state = build_backbone(from_dict(BackboneConfig, wide)).vit.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "wide.safetensors"))
    good = tmp_path / "wide.safetensors"
    (tmp_path / "truncated.safetensors").write_bytes(good.read_bytes()[:500])
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 100)
    save_file({"something.else": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    torch.save([1, 2, 3], tmp_path / "a_list.pt")
    (tmp_path / "a_dir.safetensors").mkdir()
    names = ["wide.safetensors", "truncated.safetensors", "garbage.pt", "foreign.safetensors", "a_list.pt",
             "a_dir.safetensors", "absent.safetensors"]
    return {"evil.pt": (evil, "evil.pt"), **{n: (tmp_path / n, n) for n in names}}


def reader_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Legacy / plain pickles that run code and files that are no weights: train prints the reader's line."""
    from components.weights.reader import WeightsError, read_weights_file
    from tests.components.weights.test_weights_safety import code_pickles, not_weights_files

    files = {**code_pickles(tmp_path, tmp_path / "PWNED"),
             **{n: p for n, (p, _) in not_weights_files(tmp_path).items()}}
    out = {}
    for name, path in files.items():
        with pytest.raises(WeightsError) as err:
            read_weights_file(path)
        out[name] = (path, str(err.value))
    return out


def test_bad_weight_files_stop_train_before_ray(synth_data, tmp_path, capsys, no_ray):
    marker = tmp_path / "PWNED"
    for name, (path, named) in {**weight_files(tmp_path), **reader_files(tmp_path)}.items():
        out = tmp_path / f"run-{name}"
        rc, err = run_cli(capsys, train_args(synth_data, out, "--set", f"model.backbone.checkpoint={path}"))
        assert_one_line(rc, err, "model.backbone.checkpoint")
        assert named in err, err
        assert err.count("model.backbone.checkpoint") == 1, err  # the key said once
        assert "weights_only" not in err and "Weights only" not in err, err  # torch's advice is not passed on
        assert not (out / "config.yaml").exists()  # nothing written for a refused run
    assert not marker.exists()


BAD_CONFIGS = {
    "unknown_key": (["--set", "optim.learning_rate=1"], "optim.learning_rate"),
    "wrong_type": (["--set", "optim.epochs=many"], "optim.epochs"),
    "malformed_kwargs": (["--set", "model.backbone.kwargs={patch_size:8,embed_dim:64}"],
                         "model.backbone.kwargs.patch_size:8"),
    "null_kwarg": (["--set", "model.backbone.kwargs.depth=null"], "model.backbone.kwargs.depth"),
    "unknown_kwarg": (["--set", "model.backbone.kwargs.widht=64"], "model.backbone.kwargs.widht"),
    "loading_kwarg": (["--set", "model.backbone.kwargs.pretrained=true"], "model.backbone.kwargs.pretrained"),
    "unknown_family": (["--set", "model.backbone.family=resnet"], "model.backbone.family"),
    "layer_out_of_range": (["--set", "model.adapters=[{type: bottleneck, layers: [9]}]"], "model"),
    "unknown_site": (["--set", "model.adapters=[{type: bottleneck, site: elsewhere}]"], "site"),
    "missing_manifest": (["--set", "data.manifest=/nonexistent/m.parquet"], "/nonexistent/m.parquet"),
    "missing_config_file": (["--config", "/nonexistent/exp.yaml"], "/nonexistent/exp.yaml"),
    "invalid_yaml": (["--config", "BAD_YAML"], "bad.yaml"),
    "yaml_not_mapping": (["--config", "LIST_YAML"], "list.yaml"),
    "garbage_manifest": (["--set", "data.manifest=GARBAGE"], "garbage.parquet"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configs_stop_train_before_ray(synth_data, tmp_path, capsys, no_ray, case):
    (tmp_path / "bad.yaml").write_text("optim:\n  lr: [1, 2\n  epochs: 3\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 not really")
    subst = {"BAD_YAML": tmp_path / "bad.yaml", "LIST_YAML": tmp_path / "list.yaml"}
    extra, names = BAD_CONFIGS[case]
    extra = [str(subst.get(e, e)).replace("GARBAGE", str(tmp_path / "garbage.parquet")) for e in extra]
    rc, err = run_cli(capsys, train_args(synth_data, tmp_path / "run", *extra))
    assert_one_line(rc, err, names)


# ---- zeroshot: a run directory is never trusted to run code ---------------------------------------------

def test_zeroshot_on_a_hostile_run_directory(synth_data, tmp_path, capsys, no_ray):
    """A run dir handed over by someone else: config.yaml asks open_clip to unpickle a file."""
    evil, marker = evil_file(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "model:\n  kind: m2clip\n  backbone: {family: openclip_vit, name: vidpeft-tiny-clip, img_size: 32, "
        f"num_frames: 2, checkpoint: {evil}, kwargs: {{weights_only: false}}}}\n")
    (tmp_path / "classes.txt").write_text("\n".join(f"class {i}" for i in range(4)) + "\n")
    rc, err = run_cli(capsys, ["zeroshot", "--checkpoint", run, "--classes", tmp_path / "classes.txt",
                               "--manifest", synth_data, "--split", "val"])
    assert_one_line(rc, err, "model.backbone.kwargs.weights_only")
    assert not marker.exists()
    # without the kwarg the pickle checkpoint itself is refused by the safe reader
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace(", kwargs: {weights_only: false}", ""))
    rc, err = run_cli(capsys, ["zeroshot", "--checkpoint", run, "--classes", tmp_path / "classes.txt",
                               "--manifest", synth_data, "--split", "val"])
    assert_one_line(rc, err, str(evil))
    assert not marker.exists()


@pytest.mark.parametrize("case", ["no_config", "absent_classes", "empty_classes", "absent_manifest"])
def test_zeroshot_bad_inputs_are_one_line(synth_data, tmp_path, capsys, no_ray, case):
    run = tmp_path / "run"
    run.mkdir()
    if case != "no_config":
        (run / "config.yaml").write_text(
            "model:\n  kind: m2clip\n  backbone: {family: openclip_vit, name: vidpeft-tiny-clip, img_size: 32, "
            "num_frames: 2}\n")
    classes = tmp_path / "classes.txt"
    if case != "absent_classes":
        classes.write_text("" if case == "empty_classes" else "a\nb\nc\nd\n")
    manifest = tmp_path / "absent.parquet" if case == "absent_manifest" else synth_data
    rc, err = run_cli(capsys, ["zeroshot", "--checkpoint", run, "--classes", classes, "--manifest", manifest,
                               "--split", "val"])
    names = {"no_config": str(run), "absent_classes": str(classes), "empty_classes": str(classes),
             "absent_manifest": str(manifest)}[case]
    assert_one_line(rc, err, names)


def test_more_workers_than_training_clips_is_a_one_line_error(ray_session, synth_data, tmp_path, capsys):
    rc, text = run_cli(capsys, train_args(synth_data, tmp_path / "run", "--set", "data.limit=1",
                                          "--set", "scaling.num_workers=2"))
    assert rc != 0 and "Traceback" not in text
    assert "scaling.num_workers: 1 training clip(s) cannot be shared among 2 workers" in text


# ---- values users type: synth's flags, prepare's separators and time ranges, predict's --out ------------------

@pytest.mark.parametrize("flags, names", [(["--classes", "1"], "--classes"), (["--frames", "1"], "--frames"),
                                          (["--size", "7"], "--size"), (["--seed", "-1"], "--seed")])
def test_synth_flags_out_of_range_are_one_line(tmp_path, capsys, flags, names):
    rc, err = run_cli(capsys, ["synth", tmp_path / "s", *flags])
    assert_one_line(rc, err, names)
    assert not (tmp_path / "s").exists()  # checked before anything is written


def csv_videos(tmp_path: Path, rows: list[list[str]], header: list[str]) -> tuple[Path, Path]:
    vids = tmp_path / "v"
    vids.mkdir(exist_ok=True)
    for name in ("a", "b"):
        (vids / f"{name}.mp4").write_bytes(b"not checked by prepare")
    ann = tmp_path / "train.csv"
    with open(ann, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return ann, vids


def test_a_bad_time_range_names_the_annotation_line_not_a_temporary_file(tmp_path, capsys):
    ann, vids = csv_videos(tmp_path, [["a.mp4", "x", "0", "1"], ["b.mp4", "y", "5", "2"]],
                           ["video_path", "label", "start", "end"])
    out = tmp_path / "m.parquet"
    rc, err = run_cli(capsys, ["prepare", "csv", "--annotations", ann, "--videos", vids, "--out", out,
                               "--set", "start_column=start", "--set", "end_column=end"])
    assert_one_line(rc, err, f"{ann}, line 3")
    assert "partial" not in err and "end_sec" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["train.csv", "v"]  # no temporary left


def test_multi_label_separators_as_typed_and_the_manifest_follows_the_umask(tmp_path, capsys):
    """`--set multi_label_sep=|` is the character (YAML alone reads '|' as an empty block); an empty separator is
    one line; the manifest gets the umask's mode (mkstemp's 0600 hid it from workers under another user)."""
    import os

    from components.data.manifest import read_manifest

    ann, vids = csv_videos(tmp_path, [["a.mp4", "cut|stir"], ["b.mp4", "stir"]], ["video_path", "tags"])
    common = ["prepare", "csv", "--annotations", ann, "--videos", vids, "--set", "label_column=",
              "--set", "multi_label_column=tags"]
    rc, err = run_cli(capsys, [*common, "--out", tmp_path / "none.parquet", "--set", "multi_label_sep="])
    assert_one_line(rc, err, "multi_label_sep")
    old = os.umask(0o022)
    try:
        rc, err = run_cli(capsys, [*common, "--out", tmp_path / "m.parquet", "--set", "multi_label_sep=|"])
    finally:
        os.umask(old)
    assert rc == 0, err
    assert read_manifest(tmp_path / "m.parquet").class_names == ["cut", "stir"]
    assert (tmp_path / "m.parquet").stat().st_mode & 0o777 == 0o644


def test_an_empty_multi_label_cell_is_a_clip_with_none_of_the_classes(tmp_path, capsys):
    """Multi-label sets have clips where nothing happens (no behaviour in a group-interaction frame): an empty
    or NaN cell is a negative for every class, counted in prepare's output; a column empty on every row is
    one line, since there is nothing to learn."""
    from components.data.manifest import read_manifest

    ann, vids = csv_videos(tmp_path, [["a.mp4", "cut;stir"], ["b.mp4", ""]], ["video_path", "tags"])
    common = ["prepare", "csv", "--annotations", ann, "--videos", vids, "--set", "label_column=",
              "--set", "multi_label_column=tags"]
    main([str(a) for a in [*common, "--out", tmp_path / "m.parquet"]])
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "1 clip(s) have none of the classes" in out.out, out.err
    m = read_manifest(tmp_path / "m.parquet")
    assert m.class_names == ["cut", "stir"]
    assert {r["clip_id"]: r["multi_label"] for r in m.table.to_pylist()} == {"a": [0, 1], "b": []}
    (tmp_path / "none").mkdir()
    ann, vids = csv_videos(tmp_path / "none", [["a.mp4", "nan"], ["b.mp4", ""]], ["video_path", "tags"])
    rc, err = run_cli(capsys, ["prepare", "csv", "--annotations", ann, "--videos", vids, "--set", "label_column=",
                               "--set", "multi_label_column=tags", "--out", tmp_path / "none.parquet"])
    assert_one_line(rc, err, "no row names a class in column 'tags'")
    assert not (tmp_path / "none.parquet").exists()


def test_predict_never_replaces_a_manifest_and_reads_validation_as_val(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.config import ConfigError
    from components.data.manifest import write_manifest
    from pipelines.infer.predict import refuse_manifest_out
    from pipelines.infer.trained import check_split

    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "video_path": "a.mp4", "split": "train",
                                                        "dataset": "d", "label": 0}], ["x"])
    with pytest.raises(ConfigError, match="is a vidpeft manifest"):
        refuse_manifest_out(manifest)
    earlier = tmp_path / "predictions.parquet"
    pq.write_table(pa.table({"clip_id": ["a"], "label": ["x"]}), earlier)
    refuse_manifest_out(earlier)  # its own earlier table: replaced, as documented
    refuse_manifest_out(tmp_path / "new.parquet")
    assert [check_split(s) for s in ("validation", "Val", "test", None)] == ["val", "val", "test", None]
    with pytest.raises(ConfigError, match="--split 'dev'"):
        check_split("dev")


def test_a_class_called_none_needs_label_type_name_and_says_so(tmp_path, capsys):
    from components.data.manifest import read_manifest

    ann, vids = csv_videos(tmp_path, [["a.mp4", "None"], ["b.mp4", "cut"]], ["video_path", "label"])
    common = ["prepare", "csv", "--annotations", ann, "--videos", vids]
    rc, err = run_cli(capsys, [*common, "--out", tmp_path / "auto.parquet"])
    assert_one_line(rc, err, "line 2")
    assert "label_type=name" in err  # an exported NaN reads the same, so auto refuses it and says how to keep it
    rc, err = run_cli(capsys, [*common, "--out", tmp_path / "m.parquet", "--set", "label_type=name"])
    assert rc == 0, err
    assert read_manifest(tmp_path / "m.parquet").class_names == ["None", "cut"]


@pytest.mark.parametrize("name", ["newdir/", "m.csv"])
def test_prepare_out_must_be_a_parquet_file(tmp_path, capsys, name):
    ann, vids = csv_videos(tmp_path, [["a.mp4", "x"], ["b.mp4", "y"]], ["video_path", "label"])
    out = f"{tmp_path}/{name}"
    rc, err = run_cli(capsys, ["prepare", "csv", "--annotations", ann, "--videos", vids, "--out", out])
    assert_one_line(rc, err, ".parquet")
    assert not (tmp_path / name.rstrip("/")).exists()


def test_windows_style_paths_in_a_csv_are_found(tmp_path, capsys):
    from components.data.manifest import read_manifest

    (tmp_path / "v" / "chop").mkdir(parents=True)
    for name in ("0001", "0002"):
        (tmp_path / "v" / "chop" / f"{name}.mp4").write_bytes(b"not checked by prepare")
    ann = tmp_path / "train.csv"
    ann.write_text("video_path,label\r\nchop\\0001.mp4,a\r\nchop\\0002.mp4,b\r\n")
    rc, err = run_cli(capsys, ["prepare", "csv", "--annotations", ann, "--videos", tmp_path / "v",
                               "--out", tmp_path / "m.parquet"])
    assert rc == 0, err
    paths = sorted(read_manifest(tmp_path / "m.parquet").table["video_path"].to_pylist())
    assert [Path(p).relative_to(tmp_path / "v").as_posix() for p in paths] == ["chop/0001.mp4", "chop/0002.mp4"]


# ---- outputs the walk of session 21 found unguarded: checked before any work, nothing replaced --------------

def test_check_videos_and_zeroshot_never_replace_a_file_they_were_not_told_to(tmp_path, capsys):
    """check-videos --report/--csv and zeroshot --output replaced any file (a video, another manifest) and
    zeroshot did so only after the whole evaluation: now each is one line first, and the file is unchanged."""
    taken = tmp_path / "clip.mp4"
    taken.write_bytes(b"a video the user keeps")
    manifest = tmp_path / "m.parquet"  # never read: the outputs are checked first
    for flag in ("--report", "--csv"):
        rc, err = run_cli(capsys, ["check-videos", manifest, flag, taken])
        assert_one_line(rc, err, f"{flag} {taken}: already exists")
    rc, err = run_cli(capsys, ["check-videos", manifest, "--report", tmp_path / "r", "--csv", tmp_path / "r"])
    assert_one_line(rc, err, "give each report its own file")
    rc, err = run_cli(capsys, ["check-videos", manifest, "--report", tmp_path / "nodir" / "r.json"])
    assert_one_line(rc, err, "its folder does not exist")
    common = ["zeroshot", "--config", "m2clip/zeroshot_frozen", "--classes", tmp_path / "c.txt", "--manifest", manifest]
    rc, err = run_cli(capsys, [*common, "--output", taken])
    assert_one_line(rc, err, f"--output {taken}: already exists")
    rc, err = run_cli(capsys, [*common, "--output", manifest])
    assert_one_line(rc, err, "is this command's input (--manifest)")
    rc, err = run_cli(capsys, [*common, "--split", "bogus"])
    assert_one_line(rc, err, "--split 'bogus'")
    assert taken.read_bytes() == b"a video the user keeps"


def test_export_refuses_flags_it_would_ignore_or_a_name_the_registry_refuses_before_touching_the_run(tmp_path, capsys):
    run = tmp_path / "run"  # never read: the flags are checked first
    rc, err = run_cli(capsys, ["export", run, "--out", tmp_path / "e", "--register", "team/model"])
    assert_one_line(rc, err, "--register 'team/model'")
    rc, err = run_cli(capsys, ["export", run, "--out", tmp_path / "e", "--register", "m", "--no-mlflow"])
    assert_one_line(rc, err, "--no-mlflow")
    rc, err = run_cli(capsys, ["export", run, "--out", tmp_path / "b.safetensors", "--backbone-only", "--onnx"])
    assert_one_line(rc, err, "--onnx would be ignored")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_misspelt_campaign_metric_is_one_line_before_any_cell_trains(tmp_path, capsys):
    """ablate trained every cell and then printed an empty table (exit 0) for `metric: val_top_1`."""
    from pipelines.presets import PRESETS

    camp = tmp_path / "c.yaml"
    camp.write_text(f"name: c\nconfig: [{PRESETS.parent / 'demo.yaml'}]\nmetric: val_top_1\nseeds: [0]\n"
                    "datasets: {a: {set: [data.manifest=unused.parquet]}}\nvariants: {full: {}}\n")
    rc, err = run_cli(capsys, ["ablate", "--campaign", camp, "--out", tmp_path / "out"])
    assert_one_line(rc, err, f"{camp}: metric: 'val_top_1' is not a metric the train loop reports")
    assert not (tmp_path / "out").exists()
    camp.write_text(camp.read_text().replace("val_top_1", "val_top1"))
    (tmp_path / "file").write_text("")
    rc, err = run_cli(capsys, ["ablate", "--campaign", camp, "--out", tmp_path / "file"])
    assert_one_line(rc, err, "is a file; a campaign's folder is a directory")
