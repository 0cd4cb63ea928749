"""What `vidpeft evaluate` and `vidpeft predict` cost, the model in the command's own process or in Ray.

One tiny run of the demo config (``vidpeft synth``: 4 classes x ``--clips-per-class`` clips, 1 epoch) is
trained once; then each command runs as a user runs it (its own process, its own local Ray), ``--repeats``
times per variant, alternating so load drifts hit both alike:

- ``here``: the run as trained (``scaling.in_process: auto``): one model worker on a local instance, so the
  model runs in the command's process (pipelines/run/in_process.py: ``scores_here``);
- ``ray``: a copy of the run with ``scaling.in_process: false`` in its config.yaml: the model in a Ray task
  (evaluate) or a Ray Data actor pool (predict), as every run was scored before.

    python benchmarks/infer_cost.py                   # 2 repeats; writes benchmarks/results/infer_cost.json
    python benchmarks/infer_cost.py --repeats 3 --clips-per-class 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine, write_result  # noqa: E402

DEMO = ROOT / "pipelines" / "configs" / "demo.yaml"


def vidpeft(*args: str, env: dict) -> float:
    """Seconds of one CLI command in its own process; a failure stops the benchmark with its output."""
    t = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("vidpeft")), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"infer_cost: vidpeft {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--clips-per-class", type=int, default=4, help="synthetic clips per class (4 classes)")
    p.add_argument("--out", default="", help="result file (default benchmarks/results/infer_cost.json)")
    a = p.parse_args(argv)
    env = {**os.environ, "VIDPEFT_NO_WARM_RAY": "1"}  # each command starts its own Ray, as on a fresh machine
    env.pop("RAY_ADDRESS", None)
    work = Path(tempfile.mkdtemp(prefix="vidpeft-infer-cost-"))
    try:
        data = work / "data"
        vidpeft("synth", str(data), "--classes", "4", "--clips-per-class", str(a.clips_per_class), "--frames", "16",
                "--size", "32", env=env)
        manifest = data / "manifest.parquet"
        here = work / "run"
        print("training the run once ...", flush=True)
        vidpeft("train", "--config", str(DEMO), "--set", f"data.manifest={manifest}", "--set", f"output_dir={here}",
                "--set", f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}", "--set", "optim.epochs=1",
                "-q", env=env)
        in_ray = work / "run-ray"
        shutil.copytree(here, in_ray)
        cfg = (in_ray / "config.yaml").read_text()
        assert "in_process: auto" in cfg, "the run's config names no scaling.in_process: auto"
        (in_ray / "config.yaml").write_text(cfg.replace("in_process: auto", "in_process: false"))
        commands = {
            "evaluate": lambda run: ["evaluate", str(run), "--split", "val", "--no-mlflow", "-q",
                                     "--out", str(work / f"eval-{run.name}")],
            "predict": lambda run: ["predict", str(run), str(manifest), "--split", "val", "-q",
                                    "--out", str(work / f"preds-{run.name}.parquet")],
        }
        seconds: dict[str, dict[str, list[float]]] = {c: {"here": [], "ray": []} for c in commands}
        variants = [("here", here), ("ray", in_ray)]
        for i in range(a.repeats):
            for name, args in commands.items():
                for variant, run in variants if i % 2 == 0 else variants[::-1]:  # alternated: drift hits both
                    took = vidpeft(*args(run), env=env)
                    seconds[name][variant].append(took)
                    print(f"[{i + 1}/{a.repeats}] {name:<8} {variant:<4} {took:6.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: {v: statistics.median(s) for v, s in per.items()} for name, per in seconds.items()}
    result = {"benchmark": "infer_cost", "command": "python benchmarks/infer_cost.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine(), "data": {"classes": 4, "clips_per_class": a.clips_per_class, "val_fraction": 0.25},
              "seconds": seconds, "medians": medians}
    path = write_result("infer_cost", result, Path(a.out) if a.out else None)
    print(f"\n{'command':<10} {'model here':>11} {'model in Ray':>13}  (median seconds, command start to exit)")
    for name, m in medians.items():
        print(f"{name:<10} {m['here']:11.2f} {m['ray']:13.2f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
