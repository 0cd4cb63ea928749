"""VIDPEFT_PHASE_LOG: marks from several processes land in one file; nothing is written without it; the
fixed-cost benchmark turns marks and stamped lines into consecutive phases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipelines.runtime.phase_log import PHASE_LOG_ENV, mark, read_marks

ROOT = Path(__file__).resolve().parents[3]


def test_marks_from_processes_append_to_one_file(tmp_path, monkeypatch):
    log = tmp_path / "phases.tsv"
    monkeypatch.delenv(PHASE_LOG_ENV, raising=False)
    mark("nothing")  # no variable: no file
    assert not log.exists()
    monkeypatch.setenv(PHASE_LOG_ENV, str(log))
    mark("first")
    child = subprocess.run([sys.executable, "-c", "from pipelines.runtime.phase_log import mark; mark('child')"],
                           cwd=ROOT, capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    mark("last")
    marks = read_marks(log)
    assert [m[0] for m in marks] == ["first", "child", "last"]
    assert marks[0][1] <= marks[1][1] <= marks[2][1] and marks[1][2] != marks[0][2] == marks[2][2]  # pids
    monkeypatch.setenv(PHASE_LOG_ENV, str(tmp_path / "no" / "such" / "dir" / "f.tsv"))
    mark("lost")  # an unwritable log never breaks a run


def test_phases_are_consecutive_and_a_missing_boundary_merges_two(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from fixed_cost import PHASES, phases

    names = [key for key, source, _ in PHASES if source == "mark"]
    t0 = 1000.0
    marks = [(name, t0 + i + 1, 1) for i, name in enumerate(names) if name != "mlflow_start"]
    lines = [(t0 + 0.5, "noise"), (t0 + 3.0, "(TrainController pid=1) Requesting resources: {'CPU': 1.0}")]
    table, found = phases(t0, t0 + 50.0, marks, lines)
    assert abs(sum(p["seconds"] for p in table) - 50.0) < 1e-9  # they add up to the whole run
    assert all(p["seconds"] >= 0 for p in table)
    assert "config + preflight + MLflow run start" in [p["phase"] for p in table]  # merged across the gap
    # a line that arrives before the boundary it follows is put at that boundary, not before it
    assert found["Requesting resources"] == found["ray_ready"]
    assert found["exit"] == 50.0
