"""Fixed cost of a run: each phase's seconds from the `vidpeft train` command to its first training step and to exit.

The real command on the demo config (``pipelines/configs/demo.yaml``, 1 epoch) over a tiny synthetic dataset
(``vidpeft synth``, 16 clips: 12 train, 4 val), with ``--verbose``. Two sources of time stamps:

- the phase log: ``VIDPEFT_PHASE_LOG=FILE`` makes ``pipelines.runtime.phase_log.mark`` append ``name, time, pid``
  from the driver, the Train worker and the decoder actors (marks in cli, tracking, ray_env, ingest,
  run_plan, epoch_stream, step_watch, checkpoints, best);
- the command's output, each line stamped as it arrives: the Train controller's lines (requesting
  resources, starting the worker group) have no mark. Ray forwards worker output with a short delay,
  so those boundaries can be late by up to about a second (a boundary is never put before the previous one).

Phases, each from the previous boundary to its own (``PHASES``): Python start and the CLI; imports of torch,
Ray and the pipeline; config and preflight; MLflow's run; ``ray.init``; the datasets' plans and the
Train controller's start; the placement group; the worker group (worker process, process group) up to
the loop; model build and Ray Data's start (dataset manager, split coordinator); the decoder actor's
start; the first batch; the first step; the rest of the epoch (train and val passes); the checkpoint; Ray Train's
report and teardown; results and MLflow's end; the process's exit (Ray's shutdown, the interpreter's). Before
the ``cli_done`` mark existed the last two were one phase, "results, MLflow end, process exit".
The Train worker starts its data streams before it builds the model (pipelines/data/early_start.py), so the
Ray Data boundaries (dataset start, decoder actor, first batch) can come before the model is built; the worker's
``model_built`` mark is in each run's marks.

Cases: ``cold`` (no Ray running: the command starts one) and ``warm`` (a local Ray already up, started by
this script as the pipeline starts it, and joined through RAY_ADDRESS as a job driver joins a cluster).
The MLflow store (sqlite) is created before the runs, as it exists for every run but a machine's first.

    /work/tools/heavy .venv/bin/python benchmarks/fixed_cost.py               # 1 cold + 1 warm run
    python benchmarks/fixed_cost.py --repeats 3 --cases cold,warm --epochs 1   # cold runs first, then warm
    python benchmarks/fixed_cost.py --set scaling.in_process=true   # the loop in the driver (no Train workers)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine, write_result  # noqa: E402

from pipelines.runtime.phase_log import PHASE_LOG_ENV, read_marks  # noqa: E402  (os and time only)

DEMO = ROOT / "pipelines" / "configs" / "demo.yaml"

# boundary -> (where its time comes from, the phase that ends there); in order
PHASES: list[tuple[str, str, str]] = [
    ("cli_start", "mark", "python start + CLI"),
    ("train_imported", "mark", "imports (torch, Ray, pipeline)"),
    ("mlflow_start", "mark", "config + preflight"),
    ("ray_init", "mark", "MLflow run start"),
    ("ray_ready", "mark", "ray.init / attach"),
    ("Requesting resources", "line", "dataset plans + Train controller start"),
    ("Attempting to start training worker group", "line", "placement group"),
    ("worker_loop", "mark", "worker group start (process, torch, process group)"),
    ("Starting execution of Dataset", "line", "model build + Ray Data's dataset manager and split coordinator"),
    ("decoder_actor", "mark", "decoder actor start"),
    ("batch", "mark", "first batch"),
    ("step", "mark", "first training step"),
    ("checkpoint_save", "mark", "rest of the epoch (train + val passes)"),
    ("checkpoint_saved", "mark", "checkpoint save"),
    ("fit_done", "mark", "report + Ray Train teardown"),
    ("cli_done", "mark", "results, MLflow end"),
    ("exit", "exit", "process exit (Ray shutdown, interpreter)"),
]


def run_command(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, int, list[tuple[float, str]]]:
    """(launch time, exit time, exit code, [(arrival time, line)]) of ``cmd``, stdout and stderr merged."""
    lines: list[tuple[float, str]] = []
    launched = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                            bufsize=1)

    def pump() -> None:
        for line in proc.stdout:
            lines.append((time.time(), line.rstrip("\n")))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code = proc.wait()
    ended = time.time()
    reader.join(timeout=10)
    return launched, ended, code, lines


def phases(launched: float, ended: float, marks: list[tuple[str, float, int]],
           lines: list[tuple[float, str]]) -> tuple[list[dict], dict]:
    """Each phase's seconds between consecutive boundaries found (a missing one merges two phases)."""
    first_mark = {}
    for name, t, _ in marks:
        first_mark.setdefault(name, t)
    out, at, pending = [], launched, []
    found = {}
    for key, source, label in PHASES:
        if source == "mark":
            t = first_mark.get(key)
        elif source == "line":
            t = next((ts for ts, line in lines if key in line), None)
        else:
            t = ended
        pending.append(label)
        if t is None:
            continue
        t = max(t, at)  # a forwarded line can arrive after the next mark; never before the previous boundary
        out.append({"phase": " + ".join(pending), "seconds": t - at, "ends_at_s": t - launched, "boundary": key})
        found[key] = t - launched
        at, pending = t, []
    return out, found


def one_run(case: str, i: int, a, work: Path, manifest: Path, uri: str, env: dict, phase_log: Path) -> dict:
    out_dir = work / f"run-{case}-{i}"
    phase_log.write_text("")
    cmd = [str(Path(sys.executable).with_name("vidpeft")), "train", "--config", str(DEMO), "--verbose",
           "--set", f"data.manifest={manifest}", "--set", f"output_dir={out_dir}",
           "--set", f"tracking.tracking_uri={uri}", "--set", f"optim.epochs={a.epochs}"]
    for override in a.set:
        cmd += ["--set", override]
    launched, ended, code, lines = run_command(cmd, {**env, PHASE_LOG_ENV: str(phase_log)}, work)
    marks = read_marks(phase_log)
    table, found = phases(launched, ended, marks, lines)
    epoch_s = found.get("checkpoint_save", 0) - found.get("batch", 0) if {"checkpoint_save", "batch"} <= found.keys() \
        else None
    saves = [t - launched for name, t, _ in marks if name == "checkpoint_saved"]
    run = {
        "case": case, "repeat": i, "returncode": code, "total_s": ended - launched,
        "first_step_s": found.get("step"), "epoch_s": epoch_s,
        "fixed_s": (ended - launched) - epoch_s if epoch_s is not None else None,
        "exit_after_last_epoch_s": (ended - launched) - saves[-1] if saves else None,
        "phases": table,
        "marks": [{"name": n, "at_s": round(t - launched, 3), "pid": p} for n, t, p in marks],
        "loadavg_after": list(os.getloadavg()),
    }
    if code != 0:
        run["output_tail"] = [line for _, line in lines[-30:]]
    return run


def start_warm_ray(phase_log: Path) -> str:
    """A local Ray as `vidpeft ray up` starts it (loopback, token auth, Ray Data's per-instance actors); its
    workers inherit the phase log."""
    os.environ[PHASE_LOG_ENV] = str(phase_log)
    import ray

    from pipelines.runtime.ray_compat import start_data_services
    from pipelines.runtime.ray_env import ensure_ray

    ensure_ray()
    start_data_services()
    time.sleep(3.0)  # Ray's own processes finish starting: the runs then see an idle, warm instance
    return ray.get_runtime_context().gcs_address


def summarise(runs: list[dict]) -> dict:
    """Per case: the median of each phase and of the headline figures over its successful runs."""
    out = {}
    for case in sorted({r["case"] for r in runs}):
        ok = [r for r in runs if r["case"] == case and r["returncode"] == 0]
        if not ok:
            continue
        per_phase: dict[str, list[float]] = {}
        for r in ok:
            for p in r["phases"]:
                per_phase.setdefault(p["phase"], []).append(p["seconds"])
        heads = {k: statistics.median([r[k] for r in ok if r[k] is not None] or [float("nan")])
                 for k in ("total_s", "first_step_s", "epoch_s", "fixed_s", "exit_after_last_epoch_s")}
        out[case] = {"runs": len(ok), **heads,
                     "phases": {name: statistics.median(v) for name, v in per_phase.items()}}
    return out


def print_table(summary: dict) -> None:
    cases = list(summary)
    order = {label: i for i, (_, _, label) in enumerate(PHASES)}
    names: list[str] = []
    for s in summary.values():
        names += [n for n in s["phases"] if n not in names]
    names.sort(key=lambda n: max(i for label, i in order.items() if n.endswith(label)))  # merged: at its end
    width = max(len(n) for n in names) if names else 10
    print(f"\n{'phase':<{width}}  " + "  ".join(f"{c:>8s}" for c in cases))
    for n in names:
        print(f"{n:<{width}}  " + "  ".join(f"{summary[c]['phases'].get(n, float('nan')):8.2f}" for c in cases))
    for k, label in (("first_step_s", "command -> first training step"), ("total_s", "command -> exit"),
                     ("epoch_s", "one epoch (first batch -> checkpoint)"), ("fixed_s", "fixed cost (total - epoch)"),
                     ("exit_after_last_epoch_s", "last epoch's checkpoint -> exit")):
        print(f"{label:<{width}}  " + "  ".join(f"{summary[c][k]:8.2f}" for c in cases))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="cold,warm", help="cold (the command starts Ray), warm (a running local Ray)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per case: the cold runs first, then the warm ones on one Ray")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--clips-per-class", type=int, default=4, help="synthetic clips per class (4 classes)")
    p.add_argument("--workdir", default="", help="data, runs and the MLflow store (default: a temp dir, removed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every run, e.g. scaling.in_process=true (repeatable)")
    p.add_argument("--out", default="", help="result file (default benchmarks/results/fixed_cost.json)")
    a = p.parse_args(argv)
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    if not cases or set(cases) - {"cold", "warm"}:
        p.error(f"--cases takes cold and/or warm, got {a.cases!r}")

    info = machine("cpu")
    started = time.time()
    tmp = None if a.workdir else tempfile.TemporaryDirectory(prefix="vidpeft_fixed_cost_")
    work = Path(a.workdir or tmp.name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    vidpeft = str(Path(sys.executable).with_name("vidpeft"))
    subprocess.run([vidpeft, "synth", str(work / "data"), "--classes", "4", "--clips-per-class",
                    str(a.clips_per_class), "--frames", "16", "--size", "32"], check=True, capture_output=True)
    manifest = work / "data" / "manifest.parquet"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    from pipelines.runtime.mlflow_store import ensure_store

    ensure_store(uri)  # the store exists, as for every run but the first on a machine
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIDPEFT_LOOPBACK_GCS", PHASE_LOG_ENV)}
    runs: list[dict] = []
    warm_log = work / "phases-warm.tsv"
    for i in range(a.repeats):
        for case in [c for c in cases if c == "cold"]:
            runs.append(one_run(case, i, a, work, manifest, uri, env, work / "phases-cold.tsv"))
            print(f"[cold {i + 1}/{a.repeats}] first step {runs[-1]['first_step_s']}, exit {runs[-1]['total_s']:.1f}s, "
                  f"code {runs[-1]['returncode']}", flush=True)
    if "warm" in cases:
        address = start_warm_ray(warm_log)
        # as this process has it now: Ray put its token auth mode there (RAY_AUTH_MODE), which a joining client needs
        warm_env = {**{k: v for k, v in os.environ.items() if k != PHASE_LOG_ENV}, "RAY_ADDRESS": address}
        for i in range(a.repeats):
            runs.append(one_run("warm", i, a, work, manifest, uri, warm_env, warm_log))
            print(f"[warm {i + 1}/{a.repeats}] first step {runs[-1]['first_step_s']}, exit {runs[-1]['total_s']:.1f}s, "
                  f"code {runs[-1]['returncode']}", flush=True)
    summary = summarise(runs)
    result = {
        "benchmark": "fixed_cost",
        "command": "python benchmarks/fixed_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": vars(a), "machine": info, "loadavg_end": list(os.getloadavg()),
        "seconds": time.time() - started,
        "config": "pipelines/configs/demo.yaml, " + f"{a.epochs} epoch(s), {4 * a.clips_per_class} synthetic clips "
                  "(16 frames, 32 px), --verbose" + "".join(f", --set {o}" for o in a.set),
        "targets": {"first_step_cold_s": 20, "first_step_warm_s": 8, "exit_after_last_epoch_s": 3, "fixed_cold_s": 20},
        "summary": summary, "runs": runs,
    }
    path = write_result("fixed_cost", result, Path(a.out) if a.out else None)
    print_table(summary)
    print(f"load {info['loadavg'][0]:.1f} -> {result['loadavg_end'][0]:.1f}; wrote {path}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
