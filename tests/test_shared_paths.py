"""A plain clone passes its own tests: checks that need ../shared/ skip without it, and fail under CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_crd_tests(tmp_path, ci: str | None):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "VIDPEFT_KUBERAY_CRDS": str(tmp_path / "absent")}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           str(ROOT / "tests" / "deploy" / "test_deploy_manifests.py"), "-k", "crd"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_crd_tests_skip_with_reason_when_schemas_absent(tmp_path):
    proc = run_crd_tests(tmp_path, ci=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 skipped" in proc.stdout and "KubeRay CRD schemas not found at" in proc.stdout, proc.stdout


def test_crd_tests_fail_when_schemas_absent_under_ci(tmp_path):
    proc = run_crd_tests(tmp_path, ci="true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "4 failed" in proc.stdout and "CI=true: required" in proc.stdout, proc.stdout
