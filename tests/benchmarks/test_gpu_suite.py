"""The GPU benchmark suite runs end to end in its tiny CPU mode, so it does not rot between GPU runs; one
failing cell is recorded in its entry and the others are kept, also when the process dies mid-cell."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_suite(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_suite.json"
    env = dict(env or os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--tiny", "--device", "cpu",
                           "--out", str(out), "--data-dir", str(tmp_path / "videos"), *args],
                          capture_output=True, text=True, env=env, timeout=900)
    return proc, (json.loads(out.read_text()) if out.exists() else {})


@pytest.mark.e2e
def test_tiny_suite_writes_every_cell(tmp_path, ray_session):
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)  # the e2e cell joins it
    proc, result = run_suite(tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert result["mode"] == "tiny" and result["settings"]["amp"] == "bf16" and result["status"] == "done"
    cells = {(c["preset"], c["frames"], c["grad_checkpointing"]): c for c in result["cells"]}
    want = {(p, f, ck) for p in ("full_ft", "mhva_pt", "cm3t", "m2clip") for f in (8, 16) for ck in (False, True)}
    assert set(cells) == want and len(result["cells"]) == len(want)
    for key, c in cells.items():
        assert c["status"] == "measured", (key, c)
        for figure in ("clips_per_s", "peak_mem_bytes", "mfu", "hfu", "forward_gflops_per_clip"):
            assert math.isfinite(c[figure]) and c[figure] > 0, (key, figure, c.get(figure))
    for p in ("full_ft", "mhva_pt", "cm3t", "m2clip"):
        for f in (8, 16):
            off, on = cells[(p, f, False)], cells[(p, f, True)]
            # checkpointing recomputes forward work (HFU counts it), the model FLOPs stay what the step needs
            assert on["recomputed_gflops_per_step"] > 0 == off["recomputed_gflops_per_step"]
            assert on["executed_gflops_per_step"] > on["model_gflops_per_step"]
            assert math.isclose(on["model_gflops_per_step"], off["model_gflops_per_step"], rel_tol=0.02), (p, f)
        # 16 frames cost more FLOPs per clip than 8, whatever the timing noise
        assert cells[(p, 16, False)]["forward_gflops_per_clip"] > cells[(p, 8, False)]["forward_gflops_per_clip"]
    # a frozen backbone computes no weight gradients: less than full fine-tuning's ~3x forward
    assert cells[("mhva_pt", 8, False)]["model_over_forward"] < cells[("full_ft", 8, False)]["model_over_forward"]
    for decoder in ("decord", "pyav"):
        for frames in ("8f", "16f"):
            assert result["decode"][decoder][frames]["clips_per_s_per_core"] > 0
    e2e = result["e2e"]
    assert "error" not in e2e, e2e
    assert e2e["bound"] in ("data", "compute") and 0 <= e2e["wait_fraction"] <= 1
    assert e2e["decoder_cpus_needed"] >= 1 and e2e["decode_cpu_s_per_clip"] > 0 and e2e["e2e_step_s"] >= e2e["step_s"]
    assert "16/16 cells measured" in proc.stdout


def test_a_failing_cell_is_recorded_and_the_run_goes_on(tmp_path):
    proc, result = run_suite(tmp_path, "--presets", "full_ft,mhva_pt,m2clip", "--frames", "8", "--grad-ckpt", "off",
                             "--decoders", "", "--e2e", "", "--fail-cell", "mhva_pt/8f/ckpt-off")
    assert proc.returncode == 1, proc.stderr[-3000:]
    by_name = {c["cell"]: c for c in result["cells"]}
    assert list(by_name) == ["full_ft/8f/ckpt-off", "mhva_pt/8f/ckpt-off", "m2clip/8f/ckpt-off"]
    failed = by_name["mhva_pt/8f/ckpt-off"]
    assert failed["status"] == "failed" and "clips_per_s" not in failed
    assert failed["error"] == "RuntimeError: injected failure (--fail-cell mhva_pt/8f/ckpt-off)"
    for name in ("full_ft/8f/ckpt-off", "m2clip/8f/ckpt-off"):  # before and after the failure
        assert by_name[name]["status"] == "measured" and by_name[name]["mfu"] > 0
    assert "2/3 cells measured" in proc.stdout and failed["error"] in proc.stdout


def test_a_process_dying_mid_cell_leaves_the_cells_before_it(tmp_path):
    proc, result = run_suite(tmp_path, "--presets", "mhva_pt,m2clip", "--frames", "8", "--grad-ckpt", "off",
                             "--decoders", "", "--e2e", "", "--fail-cell", "m2clip/8f/ckpt-off:exit")
    assert proc.returncode == 3
    assert result["status"] == "running"  # never finished
    first, dying = result["cells"]
    assert first["cell"] == "mhva_pt/8f/ckpt-off" and first["status"] == "measured" and first["clips_per_s"] > 0
    assert dying == {"cell": "m2clip/8f/ckpt-off", "status": "running"}  # the cell it died in
