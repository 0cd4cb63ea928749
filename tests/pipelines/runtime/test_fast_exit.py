"""The console command ends without the interpreter's teardown (pipelines/runtime/fast_exit.py): its output,
files and exit code are those of an ordinary exit."""

from __future__ import annotations

import subprocess
import sys

from pipelines.runtime.phase_log import PHASE_LOG_ENV, read_marks


def test_console_command_output_files_and_codes(tmp_path):
    log = tmp_path / "phases.tsv"
    env = {**__import__("os").environ, PHASE_LOG_ENV: str(log)}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "synth", str(tmp_path / "data"), "--classes",
                           "2", "--clips-per-class", "2", "--frames", "8", "--size", "16"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "manifest.parquet").is_file()
    assert [m[0] for m in read_marks(log)] == ["cli_start", "cli_done"]
    bad = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "train", "--config", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.yaml" in bad.stderr, bad.stderr  # the one-line error reaches the pipe
