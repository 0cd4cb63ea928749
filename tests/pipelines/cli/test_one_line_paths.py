"""An OSError line always says which path: one raised without a filename (a copy made by a library, a C
extension's errno) names the path its innermost frame worked on, or at least where it was raised."""

from __future__ import annotations

import errno
import os

from pipelines.cli.args import one_line


def _fails_on(path):
    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))  # no filename, as the submitted search's error


def _fails_without_path():
    raise OSError(errno.EPERM, os.strerror(errno.EPERM))


def test_oserror_without_filename_names_the_path_it_was_about(tmp_path):
    try:
        _fails_on(path=str(tmp_path / "trials" / "t1" / "weights.safetensors"))
    except OSError as e:
        line = one_line(e)
    assert line == f"{tmp_path / 'trials' / 't1' / 'weights.safetensors'}: [Errno 2] No such file or directory"


def test_oserror_without_any_path_says_where_it_was_raised():
    try:
        _fails_without_path()
    except OSError as e:
        line = one_line(e)
    assert line == "(raised in test_one_line_paths.py:_fails_without_path): [Errno 1] Operation not permitted"


def test_oserror_with_filename_is_unchanged(tmp_path):
    try:
        open(tmp_path / "absent.txt")
    except OSError as e:
        assert one_line(e) == f"[Errno 2] No such file or directory: '{tmp_path / 'absent.txt'}'"


def test_read_only_output_dir_error_names_the_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.chmod(out, 0o500)
    try:
        (out / "metrics.json").write_text("{}")
    except OSError as e:
        line = one_line(e)
    else:  # running as root: permissions do not stop a write
        line = str(out / "metrics.json")
    finally:
        os.chmod(out, 0o700)
    assert str(out / "metrics.json") in line


def test_a_message_that_names_its_path_is_not_given_another(tmp_path):
    """`prepare --out data/manifest.parquet` with a missing --videos folder: the line names the folder, not
    the output path a frame happened to hold."""
    def _finds(out):
        raise FileNotFoundError(f"videos folder not found: {tmp_path / 'videos'}")

    try:
        _finds(out=str(tmp_path / "data" / "manifest.parquet"))
    except OSError as e:
        assert one_line(e) == f"videos folder not found: {tmp_path / 'videos'}"
