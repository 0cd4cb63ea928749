"""What a campaign cell costs: the tiny profile of a shipped campaign, run through the real CLI, timed per phase.

    /work/tools/heavy .venv/bin/python benchmarks/campaign_cost.py                       # cm3t_table1, tiny
    python benchmarks/campaign_cost.py --variant before --set scaling.in_process=false --no-reuse  # Train workers

Each run starts from nothing in a fresh folder: `vidpeft standins` (not timed), then
`vidpeft ablate --campaign NAME --set profile=tiny` with a local Ray instance it starts itself. The command's
lines are stamped as they arrive; Tune's result files give each trial's own seconds. Figures:

- ``per_cell_s``: the command's wall time / cells (everything a user waits for: Ray's start, the trials, the
  views evaluation of each cell, the report);
- ``trials_s``: the first trial's start to the last trial's end; ``per_trial_s`` each trial's ``time_total_s``
  (its function's start to its last report) and ``between_trials_s`` the rest (a trial's process start, Tune);
- ``evaluation_s`` (every cell's best checkpoint with the campaign's views) and ``report_s``.

``--no-reuse`` sets VIDPEFT_REUSE_TRIALS=0 (a new process per trial, as before session 12).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine, write_result  # noqa: E402

EVAL_LINE = re.compile(r"best checkpoint on \S+ with \S+ views")
TRIAL_END = re.compile(r"\[vidpeft\] trial (\S+) ended")


def stamped_run(cmd: list[str], cwd: Path, env: dict) -> tuple[int, list[tuple[float, str]], float]:
    """(return code, [(seconds since start, line)], wall seconds) of ``cmd``, its output echoed."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append((time.monotonic() - start, line.rstrip("\n")))
        print(f"  {lines[-1][0]:7.1f}s  {lines[-1][1][:150]}", flush=True)
    return proc.wait(), lines, time.monotonic() - start


def trial_results(camp_dir: Path) -> list[dict]:
    """Each trial's last result (Tune's result.json), ordered by end."""
    out = []
    for f in camp_dir.glob("tune/*/*/result.json"):
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if rows:
            out.append({"cell": rows[-1].get("config", {}).get("cell", ""), "time_total_s": rows[-1]["time_total_s"],
                        "ended": rows[-1]["timestamp"], "pid": rows[-1].get("pid")})
    return sorted(out, key=lambda r: r["ended"])


def measure(campaign: str, overrides: list[str], reuse: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="vidpeft-campaign-cost-"))
    env = {**os.environ, "VIDPEFT_REUSE_TRIALS": "1" if reuse else "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    vidpeft = [sys.executable, "-m", "pipelines.cli"]
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    subprocess.run([*vidpeft, "standins"], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    cmd = [*vidpeft, "ablate", "--campaign", campaign, "--set", "profile=tiny", *sum((["--set", s] for s in overrides), [])]
    print(f"[campaign_cost] {' '.join(cmd[2:])} (in {work}, reuse {'on' if reuse else 'off'})", flush=True)
    rc, lines, wall = stamped_run(cmd, work, env)
    if rc != 0:
        raise SystemExit(f"[campaign_cost] the campaign failed (exit {rc}); its folder: {work}")
    camp_dirs = list((work / "runs").glob("campaign-*"))
    trials = trial_results(camp_dirs[0])
    ends = [t for t, line in lines if TRIAL_END.search(line)]
    evals = [t for t, line in lines if EVAL_LINE.search(line)]
    report = next(t for t, line in lines if line.startswith("**"))
    # the first trial's start: its end (stamped line) minus its own seconds
    first_start = ends[0] - trials[0]["time_total_s"] if ends and trials else 0.0
    trials_s = (ends[-1] - first_start) if ends else 0.0
    per_trial = [t["time_total_s"] for t in trials]
    cells = len(trials)
    return {"campaign": campaign, "set": overrides, "reuse_trials": reuse, "cells": cells, "total_s": wall,
            "per_cell_s": wall / cells if cells else None,
            "start_s": first_start, "trials_s": trials_s, "per_trial_s": per_trial,
            "between_trials_s": (trials_s - sum(per_trial)) / cells if cells else None,
            "evaluation_s": (report - evals[0]) if evals else 0.0,
            "evaluation_per_cell_s": [b - a for a, b in zip(evals, [*evals[1:], report])],
            "report_s": wall - report, "trial_processes": len({t["pid"] for t in trials}),
            "trials": trials, "workdir": str(work)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--campaign", default="cm3t_table1", help="a shipped campaign with a tiny profile")
    p.add_argument("--set", action="append", default=[], help="extra KEY=VALUE for every cell")
    p.add_argument("--no-reuse", action="store_true", help="a new process per trial (VIDPEFT_REUSE_TRIALS=0)")
    p.add_argument("--variant", default="after", help="the result's key in --out (e.g. before, after)")
    p.add_argument("--out", default="", help="result file (default benchmarks/results/campaign_cost.json); "
                                             "a variant already there is replaced, the others kept")
    args = p.parse_args()
    start = time.time()
    res = measure(args.campaign, args.set, not args.no_reuse)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "campaign_cost.json"
    data = json.loads(out.read_text()) if out.is_file() else {"benchmark": "campaign_cost", "variants": {}}
    data["variants"][args.variant] = {**res, "machine": machine(), "seconds": time.time() - start,
                                      "command": " ".join(["python benchmarks/campaign_cost.py", *sys.argv[1:]])}
    data["target_per_cell_s"] = 15
    write_result("campaign_cost", data, out)
    print(f"\n[campaign_cost] {args.variant}: {res['cells']} cells in {res['total_s']:.0f} s = "
          f"{res['per_cell_s']:.1f} s per cell (target 15); trials {res['trials_s']:.0f} s "
          f"(each {min(res['per_trial_s']):.1f}-{max(res['per_trial_s']):.1f} s in its function, "
          f"{res['between_trials_s']:.1f} s between), start {res['start_s']:.0f} s, views evaluation "
          f"{res['evaluation_s']:.0f} s, report {res['report_s']:.0f} s; {res['trial_processes']} trial "
          f"process(es); written {out}")


if __name__ == "__main__":
    main()
