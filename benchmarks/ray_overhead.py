"""Ray overhead: start-up, a TorchTrainer fit against the same loop without Ray, 1 vs 2 workers, Tune per trial.

Parts (each in a fresh interpreter, so one Ray instance never serves two measurements):

1. ``ray.init``: import time and start-up of a local Ray as the pipeline starts it (``ensure_ray``).
2. The same training loop (the demo's model: a tiny frozen ViT with adapters, synthetic in-memory clips,
   so no data pipeline is involved) run (a) in-process without Ray (all threads, and one thread), (b) as
   a ``TorchTrainer`` with one worker holding all threads, (c) with two workers of one thread each (DDP
   over gloo). For each: clips/s
   inside the loop, and the fit's fixed overhead = fit wall time - the loop's own time
   (worker-group start-up, process-group set-up, reporting, teardown).
3. Tune per trial: ``vidpeft train`` against ``vidpeft tune --trials 1`` on the same config and a small
   synthetic dataset (real Ray Data, MLflow, checkpoints): the difference is what a Tune trial adds.

Overheads are also given as a share of a 5-minute trial (target <= 10%).

    python benchmarks/ray_overhead.py                 # all parts
    python benchmarks/ray_overhead.py --skip-tune --steps 40 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, emit, machine, run_isolated, summary, write_result  # noqa: E402

DEMO = ROOT / "pipelines" / "configs" / "demo.yaml"
TRIAL_SECONDS = 300.0  # the trial length the overhead target refers to


def bench_loop(config: dict) -> dict:
    """``steps`` adapter-training steps on synthetic clips; runs in-process or inside a Train worker.

    Self-contained (imports only the installed packages) because Ray ships it to worker processes.
    Returns wall-clock start/end of the timed loop, so the driver can split a fit's time.
    """
    from functools import partial

    import torch

    from components.config import from_dict
    from components.engine import TrainStep
    from components.model import ModelConfig, build_model

    in_ray = config.get("in_ray", False)
    rank, world = 0, 1
    if in_ray:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    mc = from_dict(ModelConfig, config["model"])
    model = build_model(mc, config["classes"])
    if in_ray:
        model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    g = torch.Generator().manual_seed(rank)
    bb, b = mc.backbone, config["batch"]
    batch = {"video": torch.randint(0, 256, (b, bb.num_frames, bb.img_size, bb.img_size, 3), dtype=torch.uint8,
                                    generator=g),
             "target": torch.randint(0, config["classes"], (b,), generator=g)}
    for m in mc.modalities:
        batch[f"side_{m.name}"] = torch.randn(b, m.dim, generator=g)
        batch[f"side_{m.name}_mask"] = torch.ones(b, dtype=torch.bool)

    step = partial(TrainStep(model, opt), batch)  # the engine's step: forward, backward, AdamW

    for _ in range(config["warmup"]):
        step()
    start = time.time()
    for _ in range(config["steps"]):
        step()
    end = time.time()
    out = {"loop_start": start, "loop_end": end, "loop_s": end - start, "world": world,
           "clips": config["steps"] * b * world, "clips_per_s": config["steps"] * b * world / (end - start)}
    if in_ray:
        if rank == 0:  # Train V2 keeps metrics only with checkpoints: hand the timings over in a file
            Path(config["result_file"]).write_text(json.dumps(out))
        ray.train.report(out)
    return out


def demo_model(classes: int) -> dict:
    """The demo's model section (pipelines/configs/demo.yaml) with its side feature width filled in."""
    from components.config import to_dict
    from pipelines.cli.args import load_experiment

    cfg = load_experiment([str(DEMO)], [])
    for m in cfg.model.modalities:
        m.dim = m.dim or 8
    return to_dict(cfg.model)


def worker_ray_init() -> dict:
    t0 = time.perf_counter()
    import ray

    from pipelines.runtime.ray_env import ensure_ray

    t1 = time.perf_counter()
    ensure_ray()
    t2 = time.perf_counter()
    ray.shutdown()
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "init_s": t2 - t1, "shutdown_s": t3 - t2}


def worker_loop(mode: str, args) -> dict:
    """``plain``: the loop in this process (all cores' threads; ``plain1``: one thread, as each worker of
    ``train2`` has); ``trainN``: a TorchTrainer with N workers sharing the cores."""
    cpus = os.cpu_count() or 1
    config = {"model": demo_model(args.classes), "classes": args.classes, "batch": args.batch,
              "steps": args.steps, "warmup": args.warmup, "threads": cpus}
    if mode in ("plain", "plain1"):
        config["threads"] = 1 if mode == "plain1" else cpus
        t0 = time.time()
        r = bench_loop(config)
        return {**r, "total_s": time.time() - t0, "overhead_s": 0.0}

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.runtime.ray_env import ensure_ray

    workers = int(mode.removeprefix("train"))
    t_init = time.time()
    ensure_ray()
    init_s = time.time() - t_init
    per_worker = max(cpus // workers, 1)
    with tempfile.TemporaryDirectory() as storage:
        config.update(in_ray=True, threads=per_worker, result_file=str(Path(storage) / "loop.json"))
        trainer = TorchTrainer(
            bench_loop,
            train_loop_config=config,
            scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": per_worker}),
            run_config=ray.train.RunConfig(name="bench", storage_path=storage),
        )
        t0 = time.time()
        result = trainer.fit()
        t1 = time.time()
        if result.error:
            raise RuntimeError(f"the benchmark fit failed: {result.error}")
        m = json.loads(Path(config["result_file"]).read_text())
    ray.shutdown()
    return {**{k: m[k] for k in ("loop_s", "clips", "clips_per_s", "world")}, "ray_init_s": init_s,
            "fit_s": t1 - t0, "startup_s": m["loop_start"] - t0, "teardown_s": t1 - m["loop_end"],
            "overhead_s": (t1 - t0) - m["loop_s"]}


def worker_pipeline(kind: str, args) -> dict:
    """``train`` or ``tune``: the real CLI on a small synthetic dataset, timed end to end."""
    from components.data.synth import make_synthetic_dataset
    from pipelines.cli import main as cli_main

    work = Path(tempfile.mkdtemp(prefix=f"vidpeft-bench-{kind}-"))
    make_synthetic_dataset(work / "data", num_classes=4, clips_per_class=args.clips_per_class, frames=16, size=32,
                           seed=0)
    common = ["--config", str(DEMO), "--set", f"data.manifest={work / 'data' / 'manifest.parquet'}",
              "--set", f"optim.epochs={args.epochs}", "--set", f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}"]
    t0 = time.time()
    if kind == "train":
        rc = cli_main(["train", *common, "--set", f"output_dir={work / 'run'}"])
        metrics = json.loads((work / "run" / "metrics.json").read_text())
    else:
        space = work / "space.yaml"
        # one trial over a one-value space: the trial trains exactly what `vidpeft train` trains
        space.write_text("metric: val_top1\nmode: max\nparams:\n  optim.lr: {type: choice, values: [0.003]}\n")
        rc = cli_main(["tune", *common, "--space", str(space), "--trials", "1", "--scheduler", "fifo",
                       "--out", str(work / "search")])
        metrics = {}
    wall = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"vidpeft {kind} exited {rc} (work dir {work})")
    return {"kind": kind, "wall_s": wall, "clips_per_sec": metrics.get("clips_per_sec"), "work_dir": str(work)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="timed loop steps (part 2)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=8, help="clips per step per worker (the demo's batch_size)")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per measurement")
    p.add_argument("--skip-tune", action="store_true", help="skip part 3 (train vs tune through the CLI)")
    p.add_argument("--epochs", type=int, default=1, help="part 3: epochs per run")
    p.add_argument("--clips-per-class", type=int, default=6, help="part 3: synthetic dataset size")
    p.add_argument("--out", default="")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
        if args.worker == "init":
            emit(worker_ray_init())
        elif args.worker in ("train", "tune"):
            emit(worker_pipeline(args.worker, args))
        else:
            emit(worker_loop(args.worker, args))
        return 0

    shared = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--batch={args.batch}", f"--classes={args.classes}",
              f"--epochs={args.epochs}", f"--clips-per-class={args.clips_per_class}"]
    info = machine("cpu")
    started = time.time()
    runs: dict[str, list[dict]] = {}
    modes = ["init", "plain", "plain1", "train1", "train2"] + ([] if args.skip_tune else ["train", "tune"])
    for rep in range(args.repeats):
        for mode in modes:
            r = run_isolated(Path(__file__), [f"--worker={mode}", *shared], timeout=3600)
            r["loadavg"] = list(os.getloadavg())
            runs.setdefault(mode, []).append(r)
            print(f"[{rep + 1}/{args.repeats}] {mode:6s} " + " ".join(
                f"{k}={v:.2f}" for k, v in r.items() if isinstance(v, float) and not k.startswith("loop_")),
                flush=True)

    def s(mode: str, key: str) -> dict:
        return summary([r[key] for r in runs.get(mode, []) if r.get(key) is not None])

    loops = {m: {"clips_per_s": s(m, "clips_per_s"), "loop_s": s(m, "loop_s"), "overhead_s": s(m, "overhead_s"),
                 **({"startup_s": s(m, "startup_s"), "teardown_s": s(m, "teardown_s"), "fit_s": s(m, "fit_s")}
                    if not m.startswith("plain") else {})}
             for m in ("plain", "plain1", "train1", "train2")}
    init = {"import_s": s("init", "import_s"), "init_s": s("init", "init_s"), "shutdown_s": s("init", "shutdown_s")}
    plain = loops["plain"]["clips_per_s"]["median"]
    fixed = init["init_s"]["median"] + loops["train1"]["overhead_s"]["median"]
    result = {
        "benchmark": "ray_overhead",
        "command": "python benchmarks/ray_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "worker"},
        "machine": info,
        "loadavg_end": list(os.getloadavg()),
        "seconds": time.time() - started,
        "ray_init": init,
        "loop": loops,
        "throughput_vs_plain": {m: loops[m]["clips_per_s"]["median"] / plain for m in ("train1", "train2")},
        "scaling_2_vs_1_workers": loops["train2"]["clips_per_s"]["median"] / loops["train1"]["clips_per_s"]["median"],
        "fixed_overhead_s": fixed,
        "fixed_overhead_share_of_5min_trial": fixed / TRIAL_SECONDS,
        "runs": runs,
        "target": {"overhead_share_max": 0.10, "trial_seconds": TRIAL_SECONDS},
    }
    if not args.skip_tune:
        train_wall, tune_wall = s("train", "wall_s")["median"], s("tune", "wall_s")["median"]
        result["pipeline"] = {"train_wall_s": s("train", "wall_s"), "tune_wall_s": s("tune", "wall_s"),
                              "tune_trial_overhead_s": tune_wall - train_wall,
                              "tune_trial_overhead_share_of_5min_trial": (tune_wall - train_wall) / TRIAL_SECONDS}
    path = write_result("ray_overhead", result, Path(args.out) if args.out else None)

    print(f"\nray import {init['import_s']['median']:.1f}s, ray.init {init['init_s']['median']:.1f}s "
          f"(spread {init['init_s']['spread']:.0%})")
    for m, v in loops.items():
        extra = "" if m.startswith("plain") else (f"  fit overhead {v['overhead_s']['median']:.1f}s (start-up "
                                         f"{v['startup_s']['median']:.1f}s, teardown {v['teardown_s']['median']:.1f}s)")
        print(f"{m:7s} {v['clips_per_s']['median']:8.1f} clips/s (spread {v['clips_per_s']['spread']:.0%}){extra}")
    print(f"2 vs 1 workers: {result['scaling_2_vs_1_workers']:.2f}x clips/s")
    print(f"fixed Ray overhead per run {fixed:.1f}s = {fixed / TRIAL_SECONDS:.1%} of a 5-min trial (target <= 10%)")
    if "pipeline" in result:
        pl = result["pipeline"]
        print(f"vidpeft train {pl['train_wall_s']['median']:.1f}s, tune (1 trial) {pl['tune_wall_s']['median']:.1f}s: "
              f"{pl['tune_trial_overhead_s']:.1f}s per trial = {pl['tune_trial_overhead_share_of_5min_trial']:.1%} "
              "of a 5-min trial")
    print(f"load {info['loadavg'][0]:.1f} -> {result['loadavg_end'][0]:.1f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
