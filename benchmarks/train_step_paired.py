"""Training-step ratios measured in pairs: an adapter case and its full fine-tuning baseline in ONE
process, their steps alternated (A B B A ...), the ratio taken per pair.

``train_step.py`` runs each case in its own process, which is what its peak-memory figures need; its
step ratio is then one process's median over another's, and on a shared VM the two processes see
different loads (step times here swing by 15-30% between identical steps). Here both models live
side by side and each pair's two steps run seconds apart, so drift in the machine's load hits both
halves of a pair alike; what is left shows up as the spread of the per-pair ratios, reported beside
their median. Memory is not measured (two models share the process): use ``train_step.py`` for it.

    python benchmarks/train_step_paired.py                        # M2-CLIP and MHVA+PT, 8 pairs each
    python benchmarks/train_step_paired.py --cases m2clip --pairs 12
    python benchmarks/train_step_paired.py --tiny                 # tiny backbones (the test suite's run)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_run_args, emit, machine, pick_device, run_isolated, write_result  # noqa: E402

sys.path.insert(0, str(ROOT))
from train_step import CASES, add_model_args, experiment, make_step, synthetic_batch  # noqa: E402

TARGETS = {"mhva_pt": 0.75, "m2clip": 0.85}  # issue #16: step <= this x full fine-tuning's, on CPU
TINY = {"model": "vit_tiny_patch16_224", "clip_model": "vidpeft-tiny-clip", "img_size": 32, "frames": 4}


def build(case: str, args, device):
    """(model, one-step function) for ``case``, as ``train_step.py``'s worker builds them."""
    from components.model import build_model

    cfg = experiment(case, args)
    names = [f"class {i}" for i in range(args.classes)]
    model = build_model(cfg.model, args.classes, names).to(device).train()
    return make_step(model, cfg, synthetic_batch(cfg, args.batch, args.classes, device), device)


def timed(step, sync) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    step()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


def worker(args) -> dict:
    """One case and its baseline in this process: warm both, then ``pairs`` alternated pairs of steps."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(pick_device(args.device))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    base = CASES[args.case]["baseline"]
    steps = {base: build(base, args, device), args.case: build(args.case, args, device)}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    sync()
    wall: dict[str, list[float]] = {base: [], args.case: []}
    cpu: dict[str, list[float]] = {base: [], args.case: []}
    for i in range(args.pairs):
        order = (base, args.case) if i % 2 == 0 else (args.case, base)  # A B, then B A: no side always first
        for name in order:
            w, c = timed(steps[name], sync)
            wall[name].append(w)
            cpu[name].append(c)
    return {"case": args.case, "baseline": base, "wall_s": wall, "cpu_s": cpu}


def describe(ratios: list[float]) -> dict:
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
    return {"median": statistics.median(ratios), "q1": q[0], "q3": q[2], "min": min(ratios), "max": max(ratios),
            "n": len(ratios), "values": ratios}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="m2clip,mhva_pt",
                   help=f"comma-separated adapter cases, each paired with its baseline: "
                        f"{sorted(c for c, s in CASES.items() if s['baseline'])}")
    p.add_argument("--pairs", type=int, default=8, help="alternated pairs of timed steps per case")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each model first")
    add_model_args(p)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--tiny", action="store_true", help="tiny random-init backbones at 32 px, 4 frames (seconds)")
    add_run_args(p, "train_step_paired")
    args = p.parse_args(argv)
    args.amp, args.grad_ckpt, args.host_mmap = "off", "off", "auto"  # what experiment() reads
    if args.tiny:
        for k, v in TINY.items():
            setattr(args, k, v)
    if args.pairs < 1:
        p.error("--pairs must be at least 1")

    if args.worker:
        emit(worker(args))
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES or not CASES[c]["baseline"]]
    if bad:
        p.error(f"not an adapter case with a baseline: {bad}; known: "
                f"{sorted(c for c, s in CASES.items() if s['baseline'])}")
    passed = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
              ("pairs", "warmup", "model", "clip_model", "frames", "img_size", "batch", "classes", "modality_dim",
               "device", "threads")]
    info = machine(pick_device(args.device))
    started, table = time.time(), {}
    for case in cases:
        r = run_isolated(Path(__file__), ["--worker=pair", *passed, f"--case={case}"])
        base = r["baseline"]
        table[case] = {
            "baseline": base,
            "step_wall_ratio": describe([a / b for a, b in zip(r["wall_s"][case], r["wall_s"][base])]),
            "step_cpu_ratio": describe([a / b for a, b in zip(r["cpu_s"][case], r["cpu_s"][base])]),
            "wall_s": {case: statistics.median(r["wall_s"][case]), base: statistics.median(r["wall_s"][base])},
            "steps_wall_s": r["wall_s"],  # per pair, in pair order
            "target_max": TARGETS.get(case),
        }
        w = table[case]["step_wall_ratio"]
        print(f"{case:8s} / {base:9s}  {args.pairs} pairs: ratio median {w['median']:.3f} "
              f"(quartiles {w['q1']:.3f}-{w['q3']:.3f}, range {w['min']:.3f}-{w['max']:.3f}); "
              f"CPU s {table[case]['step_cpu_ratio']['median']:.3f}; median steps "
              f"{table[case]['wall_s'][case]:.2f} s vs {table[case]['wall_s'][base]:.2f} s", flush=True)
    result = {
        "benchmark": "train_step_paired",
        "command": "python benchmarks/train_step_paired.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "case")},
        "machine": info,
        "seconds": time.time() - started,
        "cases": table,
    }
    path = write_result("train_step_paired", result, Path(args.out) if args.out else None)
    verdicts = [f"{c} {t['step_wall_ratio']['median']:.3f}x {'<=' if t['step_wall_ratio']['median'] <= t['target_max'] else '>'} "
                f"{t['target_max']}x" for c, t in table.items() if t["target_max"] and not args.tiny]
    print(("targets (issue #16, median of pairs): " + "; ".join(verdicts) + "; " if verdicts else "")
          + f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
