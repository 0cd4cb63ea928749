"""The GPU benchmark suite runs end to end in its tiny CPU mode, so it does not rot between GPU runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_suite_writes_every_cell(tmp_path):
    out = tmp_path / "gpu_suite.json"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--tiny", "--device", "cpu",
                           "--out", str(out), "--data-dir", str(tmp_path / "videos")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "tiny" and result["settings"]["amp"] == "bf16"
    cells = {(c["preset"], c["frames"], c["grad_checkpointing"]): c for c in result["cells"]}
    want = {(p, f, ck) for p in ("full_ft", "mhva_pt", "cm3t", "m2clip") for f in (8, 16) for ck in (False, True)}
    assert set(cells) == want and len(result["cells"]) == len(want)
    for key, c in cells.items():
        for figure in ("clips_per_s", "peak_mem_bytes", "mfu", "forward_gflops_per_clip"):
            assert math.isfinite(c[figure]) and c[figure] > 0, (key, figure, c.get(figure))
    # 16 frames cost more FLOPs per clip than 8, whatever the timing noise
    for p in ("full_ft", "m2clip"):
        assert cells[(p, 16, False)]["forward_gflops_per_clip"] > cells[(p, 8, False)]["forward_gflops_per_clip"]
    for decoder in ("decord", "pyav"):
        for frames in ("8f", "16f"):
            assert result["decode"][decoder][frames]["clips_per_s_per_core"] > 0
    assert "16/16 cells measured" in proc.stdout
