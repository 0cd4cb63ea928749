"""A run directory copied or moved says what still points at its original place (pipelines/run/run_place.py)."""

from __future__ import annotations

import json
import shutil

from pipelines.run.run_place import check_resumed_copy, moved_from, note_moved_run


def make_run(root):
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(f"output_dir: {root}\n")
    (root / "run_info.json").write_text(json.dumps({"run_id": "abc", "tracking_uri": "sqlite:////x/mlflow.db",
                                                    "output_dir": str(root)}))
    return root


def test_a_run_in_place_says_nothing(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert moved_from(run) is None
    note_moved_run(run, "sqlite:////x/mlflow.db")
    check_resumed_copy([str(run / "config.yaml")], run)
    assert capsys.readouterr().err == ""


def test_a_copied_run_says_its_mlflow_run_is_the_originals(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, copy)
    assert moved_from(copy) == run
    note_moved_run(copy, "http://alice:SECRET@host:5000")
    err = capsys.readouterr().err
    assert f"{copy} was copied or moved from {run}" in err and "alice:***@host" in err and "SECRET" not in err
    # resuming the copy from its saved config would write into the original's output_dir: said, with the fix
    check_resumed_copy([str(copy / "config.yaml")], run)
    err = capsys.readouterr().err
    assert f"this run writes to {run}" in err and f"--set output_dir={copy}" in err
    check_resumed_copy([str(copy / "config.yaml")], copy)  # the user followed it: nothing to say
    assert capsys.readouterr().err == ""


def test_runs_before_the_field_are_not_called_moved(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "run_info.json").write_text(json.dumps({"run_id": "abc", "tracking_uri": "sqlite:////x/mlflow.db"}))
    assert moved_from(run) is None
