"""benchmarks/train_step_paired.py in its tiny mode: both models of a pair in one process, a ratio per pair."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "train_step_paired.py"


def test_tiny_pairs_give_one_ratio_per_pair(tmp_path):
    out = tmp_path / "paired.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--pairs", "3", "--cases", "m2clip",
                           "--threads", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    case = json.loads(out.read_text())["cases"]["m2clip"]
    assert case["baseline"] == "full_clip"
    steps, ratio = case["steps_wall_s"], case["step_wall_ratio"]
    assert len(steps["m2clip"]) == len(steps["full_clip"]) == ratio["n"] == 3
    # each ratio is its own pair's: the adapter step over the baseline step timed beside it
    assert ratio["values"] == pytest.approx([a / b for a, b in zip(steps["m2clip"], steps["full_clip"])])
    assert ratio["min"] <= ratio["q1"] <= ratio["median"] <= ratio["q3"] <= ratio["max"]
    assert "m2clip   / full_clip  3 pairs" in proc.stdout and "wrote" in proc.stdout


def test_a_case_without_a_baseline_is_refused_in_one_line():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cases", "full"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "not an adapter case with a baseline: ['full']" in proc.stderr.splitlines()[-1]
