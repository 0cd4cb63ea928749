"""Model FLOP utilisation (MFU): training FLOP/s of a model over the measured matmul peak of the device.

1. Peak: large square GEMMs (fp32, and bf16) and fp32 GEMMs at the shapes a ViT-B layer runs (tokens x
   768 x 3072) timed on this device with the same thread count; the best of all of them is the peak
   (medians are in the JSON too). The layer shapes sometimes beat the square GEMM, so they count.
2. FLOPs per training step, counted on one real step after a warm-up step (``components.flops.count_step``:
   FlopCounterMode, matmul/conv/attention only, a multiply-add = 2 FLOPs, grouped convolutions' weight
   gradients counted as run). Model FLOPs (MFU) = what the step needs: the forward as the step runs it,
   input gradients, and weight gradients of the trained weights only (a frozen layer costs ~2x its
   forward, a trained one 3x: full fine-tuning is the usual 3x). Executed FLOPs (HFU) add the forward
   that activation checkpointing recomputes; without checkpointing the two are equal.
3. Every figure is given per wall second and per process CPU second. On a machine other jobs share,
   wall time includes time spent waiting for a core, so ``*_cpu`` (FLOPs per CPU second of the model
   over FLOPs per CPU second of the GEMM) is the steadier figure; on an idle machine the two agree.

    python benchmarks/mfu.py                            # ViT-B/16 full FT and MHVA+PT, 1 x 8 frames
    python benchmarks/mfu.py --cases full --gemm-size 2048 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_run_args, emit, machine, pick_device, run_isolated, summary, write_result  # noqa: E402

import train_step  # noqa: E402  (cases, configs, the training step itself)


def gemm_rate(n: int, m: int, k: int, dtype: str, device: str, repeats: int) -> dict:
    """FLOP/s of (n x k) @ (k x m) in ``dtype``: per wall second and per process CPU second."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, k, device=device, generator=g).to(dt)
    b = torch.randn(k, m, device=device, generator=g).to(dt)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    flops = 2.0 * n * m * k
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        sync()
        wall.append(flops / (time.perf_counter() - t0))
        cpu.append(flops / max(time.process_time() - c0, 1e-9))
    return {"shape": [n, k, m], "dtype": dtype, "flops_per_s": summary(wall), "flops_per_cpu_s": summary(cpu)}


def peak_worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    tokens = args.batch * args.frames * ((args.img_size // 16) ** 2 + 1)
    out = {"square": {}, "model_shapes": {}}
    dtypes = ["fp32", "bf16"] + (["fp16"] if device == "cuda" else [])
    native_bf16 = device == "cuda" or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    for dt in dtypes:
        # CPUs without bf16 instructions emulate it ~100x slower than fp32: a small GEMM shows that
        n = args.gemm_size if dt == "fp32" or native_bf16 else min(args.gemm_size, 512)
        out["square"][dt] = gemm_rate(n, n, n, dt, device, args.gemm_repeats)
    # a ViT-B block's matmuls: qkv (768 -> 2304), proj, fc1 (768 -> 3072), fc2 (3072 -> 768)
    for name, (k, m) in {"qkv": (768, 2304), "fc1": (768, 3072), "fc2": (3072, 768)}.items():
        out["model_shapes"][name] = gemm_rate(tokens, m, k, "fp32", device, args.gemm_repeats)
    out["loadavg"] = list(os.getloadavg())
    return out


def model_worker(args) -> dict:
    """Forward FLOPs, executed step FLOPs and step time of one case, in this fresh process."""
    import torch
    from components.flops import count_step
    from components.model import build_model, parameter_counts

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(pick_device(args.device))
    cfg = train_step.experiment(args.case, args)
    names = [f"class {i}" for i in range(args.classes)]
    model = build_model(cfg.model, args.classes, names).to(device).train()
    batch = train_step.synthetic_batch(cfg, args.batch, args.classes, device)
    step = train_step.make_step(model, cfg, batch, device)
    step()  # warm-up: what a steady step reuses (M2-CLIP's frozen text prefix) is cached
    flops = count_step(step, model)  # one real step: forward, backward, recomputation
    wall, cpu = train_step.time_steps(step, args.warmup, args.steps, device)
    return {"case": args.case, "forward_flops": flops.forward, "model_flops": flops.model,
            "executed_flops": flops.executed, "step_wall_s": wall,
            "step_cpu_s": cpu, **parameter_counts(model), "loadavg": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="full,mhva_pt", help=f"comma-separated, from {sorted(train_step.CASES)}")
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--clip-model", default="ViT-B-16-quickgelu")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--modality-dim", type=int, default=1024)
    p.add_argument("--amp", default="off", help="optim.amp for the model step: off, bf16, fp16")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per repetition")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per case and for the peak")
    p.add_argument("--gemm-size", type=int, default=2048, help="square GEMM size for the peak")
    p.add_argument("--gemm-repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    add_run_args(p, "mfu")
    args = p.parse_args(argv)

    if args.worker:
        emit(peak_worker(args) if args.worker == "peak" else model_worker(args))
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    shared = [f"--model={args.model}", f"--clip-model={args.clip_model}", f"--frames={args.frames}",
              f"--img-size={args.img_size}", f"--batch={args.batch}", f"--classes={args.classes}",
              f"--modality-dim={args.modality_dim}", f"--amp={args.amp}", f"--steps={args.steps}",
              f"--warmup={args.warmup}", f"--gemm-size={args.gemm_size}", f"--gemm-repeats={args.gemm_repeats}",
              f"--device={args.device}", f"--threads={args.threads}"]
    device = pick_device(args.device)
    info = machine(device)
    started = time.time()
    peaks, runs = [], {c: [] for c in cases}
    for rep in range(args.repeats):  # peak and model steps interleaved: both see the same machine load
        peaks.append(run_isolated(Path(__file__), ["--worker=peak", *shared]))
        for case in cases:
            runs[case].append(run_isolated(Path(__file__), ["--worker=model", *shared, f"--case={case}"]))
        best_now = max(peaks[-1]["square"]["fp32"]["flops_per_s"]["values"])
        print(f"[{rep + 1}/{args.repeats}] fp32 GEMM best {best_now / 1e9:.0f} GFLOP/s; "
              f"load {peaks[-1]['loadavg'][0]:.1f}", flush=True)

    def best(dtype: str, key: str) -> float:
        """Peak = the best GEMM seen in any repetition, square or at the model's own shapes (fp32)."""
        gemms = [pk["square"][dtype] for pk in peaks]
        if dtype == "fp32":
            gemms += [g for pk in peaks for g in pk["model_shapes"].values()]
        return max(max(g[key]["values"]) for g in gemms)

    dtype = "bf16" if args.amp == "bf16" else "fp16" if args.amp == "fp16" else "fp32"
    peak_wall, peak_cpu = best(dtype, "flops_per_s"), best(dtype, "flops_per_cpu_s")
    table = {}
    for case, rs in runs.items():
        wall = summary([statistics.median(r["step_wall_s"]) for r in rs])
        cpu = summary([statistics.median(r["step_cpu_s"]) for r in rs])
        model_flops = rs[0]["model_flops"]
        executed = rs[0]["executed_flops"]
        # CPU-second rates: a step's FLOPs per CPU second, against the GEMM's FLOPs per CPU second
        table[case] = {
            "forward_gflops": rs[0]["forward_flops"] / 1e9,
            "model_gflops_per_step": model_flops / 1e9,
            "executed_gflops_per_step": executed / 1e9,
            "model_over_forward": model_flops / rs[0]["forward_flops"],
            "executed_over_forward": executed / rs[0]["forward_flops"],
            "step_wall_s": wall,
            "step_cpu_s": cpu,
            "model_tflops_per_s": model_flops / wall["median"] / 1e12,
            "mfu": model_flops / wall["median"] / peak_wall,
            # best step against best GEMM: each the least disturbed by other jobs
            "mfu_best": model_flops / min(min(r["step_wall_s"]) for r in rs) / peak_wall,
            "hfu": executed / wall["median"] / peak_wall,
            "mfu_cpu": model_flops / cpu["median"] / peak_cpu,
            "hfu_cpu": executed / cpu["median"] / peak_cpu,
            "trainable_pct": rs[0]["trainable_pct"],
            "loadavg_during": [r["loadavg"][0] for r in rs],
        }
    result = {
        "benchmark": "mfu",
        "command": "python benchmarks/mfu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "case")},
        "machine": info,
        "loadavg_end": list(os.getloadavg()),
        "seconds": time.time() - started,
        "flop_counting": "one real step under FlopCounterMode (components.flops.count_step; matmul/conv/attention, "
                         "multiply-add = 2): model = forward + backward as needed (frozen weights: no weight "
                         "gradients); executed = model + the forward recomputed by checkpointing.",
        "peak": {"dtype": dtype, "flops_per_s": peak_wall, "flops_per_cpu_s": peak_cpu, "runs": peaks},
        "cases": table,
        "target": {"mfu_min": 0.5},
    }
    path = write_result("mfu", result, Path(args.out) if args.out else None)
    print(f"\nmeasured {dtype} matmul peak: {peak_wall / 1e9:.0f} GFLOP/s wall, {peak_cpu / 1e9:.0f} GFLOP per CPU-s")
    print(f"{'case':10s} {'fwd GFLOP':>10s} {'step/fwd':>8s} {'step s':>8s} {'MFU':>6s} {'HFU':>6s} "
          f"{'MFU cpu':>8s} {'HFU cpu':>8s} {'MFU best':>9s}")
    for case, t in table.items():
        print(f"{case:10s} {t['forward_gflops']:10.1f} {t['model_over_forward']:8.2f} "
              f"{t['step_wall_s']['median']:8.2f} {t['mfu']:6.1%} {t['hfu']:6.1%} "
              f"{t['mfu_cpu']:8.1%} {t['hfu_cpu']:8.1%} {t['mfu_best']:9.1%}")
    print(f"target: MFU >= 50%; load {info['loadavg'][0]:.1f} -> {result['loadavg_end'][0]:.1f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
