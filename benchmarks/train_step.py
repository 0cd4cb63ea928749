"""Training-step benchmark: adapter tuning (MHVA+PT, CM3T, M2-CLIP) against full fine-tuning.

Every case is one real training step of the model the pipeline builds (``components.model.build_model``
from the shipped presets, moved to a ViT-B backbone): forward with the task loss, backward, gradient
clipping, AdamW step: the engine's ``TrainStep``, which ``pipelines/run/train_loop.py`` runs. Each (case, repetition) runs in a
fresh interpreter so peak memory is that configuration's alone:

- GPU: ``torch.cuda.max_memory_allocated`` (weights + gradients + optimizer state + activations).
- CPU: peak RSS (``getrusage`` high-water mark) minus the RSS before the model was built: the same
  things plus allocator slack. Each worker sets glibc's mmap threshold as a training worker would
  (``scaling.host_mmap_mib``, ``components/engine/host_memory.py``: auto = 4 MiB with checkpointing,
  glibc's default without); ``--host-mmap 0`` measures glibc's default everywhere.
  Beside it, ``peak_live_bytes``: the largest live C-heap size sampled during the steps (``LiveHeap``,
  glibc ``mallinfo2``) minus the size before the build, i.e. without the memory glibc keeps after
  ``free``: the CPU counterpart of ``max_memory_allocated``.

Reported per case: step time (wall and process CPU seconds; CPU time is less distorted by other
processes on a shared machine), peak memory, trainable parameters and their share of the frozen
backbone, and each adapter case's ratios to the full fine-tuning case on the same backbone.

    python benchmarks/train_step.py                       # ViT-B/16, 1 clip x 8 frames, 224 px
    python benchmarks/train_step.py --cases full,mhva_pt --amp off,bf16 --repeats 3
    python benchmarks/train_step.py --cases full,mhva_pt,m2clip --grad-ckpt off,on   # activation checkpointing

A case measured with ``model.grad_checkpointing`` is keyed ``CASE@AMP+ckpt`` and compared, like every
adapter case, with full fine-tuning WITHOUT checkpointing (what a user would otherwise run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ROOT, LiveHeap, add_run_args, current_rss, emit, fmt_mib, machine, peak_rss, pick_device, run_isolated, summary,
    write_result,
)

PRESETS = ROOT / "pipelines" / "configs" / "presets"

# case -> (preset file or None, backbone kind, finetune, the full-FT case it is compared with)
CASES: dict[str, dict] = {
    "full": {"preset": None, "backbone": "timm", "finetune": "full", "baseline": None},
    "linear": {"preset": None, "backbone": "timm", "finetune": "linear", "baseline": "full"},
    "mhva_pt": {"preset": "cm3t/mhva_pt.yaml", "backbone": "timm", "finetune": "adapters", "baseline": "full"},
    # the two halves of MHVA+PT alone, to see which one costs the time
    "mhva": {"preset": "cm3t/mhva_pt.yaml", "only": "mhva", "backbone": "timm", "finetune": "adapters",
             "baseline": "full"},
    "prefix": {"preset": "cm3t/mhva_pt.yaml", "only": "prefix", "backbone": "timm", "finetune": "adapters",
               "baseline": "full"},
    "cm3t": {"preset": "cm3t/cm3t.yaml", "backbone": "timm", "finetune": "adapters", "baseline": "full"},
    "full_clip": {"preset": None, "backbone": "clip", "finetune": "full", "baseline": None},
    "m2clip": {"preset": "m2clip/m2clip_full.yaml", "backbone": "clip", "finetune": "adapters",
               "baseline": "full_clip"},
}
DEFAULT_CASES = "full,mhva_pt,cm3t,full_clip,m2clip"


def experiment(case: str, args) -> "object":
    """The ExperimentConfig of a case: the preset's model section on the benchmark's backbone and size."""
    from pipelines.cli.args import load_experiment

    spec = CASES[case]
    files = [str(PRESETS / spec["preset"])] if spec["preset"] else []
    if spec["backbone"] == "timm":
        bb = {"family": "timm_vit", "name": args.model}
    else:
        bb = {"family": "openclip_vit", "name": args.clip_model}
    sets = [f"model.backbone.{k}={v}" for k, v in bb.items()]
    sets += [f"model.backbone.img_size={args.img_size}", f"model.backbone.num_frames={args.frames}",
             f"model.finetune={spec['finetune']}", f"optim.amp='{args.amp}'",  # quoted: YAML reads off as false
             f"model.grad_checkpointing={str(getattr(args, 'grad_ckpt', 'off') == 'on').lower()}",
             f"scaling.host_mmap_mib={getattr(args, 'host_mmap', 'auto')}"]
    if spec["backbone"] == "clip" and not spec["preset"]:
        sets.append("model.backbone.pool=cls")
    cfg = load_experiment(files, sets)
    if spec.get("only"):
        cfg.model.adapters = [a for a in cfg.model.adapters if a.type == spec["only"]]
    for m in cfg.model.modalities:  # a manifest would supply these widths (CM3T: 1024-d audio / flow)
        m.dim = m.dim or args.modality_dim
    return cfg


def synthetic_batch(cfg, batch: int, num_classes: int, device) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    bb = cfg.model.backbone
    out = {
        "video": torch.randint(0, 256, (batch, bb.num_frames, bb.img_size, bb.img_size, 3), dtype=torch.uint8,
                               generator=g),
        "target": torch.randint(0, num_classes, (batch,), generator=g),
    }
    for m in cfg.model.modalities:
        out[f"side_{m.name}"] = torch.randn(batch, m.dim, generator=g)
        out[f"side_{m.name}_mask"] = torch.ones(batch, dtype=torch.bool)
    return {k: v.to(device) for k, v in out.items()}


def make_train_step(model, cfg, device, batch_size: int):
    """The engine's TrainStep (autocast, backward, clip, AdamW) with the optimizer training builds
    (``optimizer_for``: the preset's weight-decay exclusions, layer decay and lr scaled to
    ``batch_size`` clips a step), as pipelines/run/train_loop.py builds it; call it with a batch."""
    from components.engine import TrainStep, optimizer_for

    o = cfg.optim
    optimizer, _ = optimizer_for(model, o, batch_size * o.accumulate)
    return TrainStep(model, optimizer, device, amp=o.amp, grad_clip=o.grad_clip)


def make_step(model, cfg, batch, device):
    """One optimisation step on ``batch`` as pipelines/run/train_loop.py runs it (``make_train_step``)."""
    train_step = make_train_step(model, cfg, device, len(batch["video"]))

    def step() -> float:
        return float(train_step(batch)["loss"])

    return step


def time_steps(step, warmup: int, steps: int, device) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    wall, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def worker(args) -> dict:
    """One (case, repetition) in this fresh process: build, warm up, time ``steps`` steps, peak memory."""
    import torch

    from components.engine import apply_mmap_threshold
    from components.model import build_model, parameter_counts

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(pick_device(args.device))
    cfg = experiment(args.case, args)
    mmap_mib = apply_mmap_threshold(cfg.scaling.host_mmap_mib, cfg.model.grad_checkpointing, device)  # as train_loop
    names = [f"class {i}" for i in range(args.classes)]
    heap = LiveHeap()  # CPU: live heap bytes beside RSS (allocator slack excluded)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = current_rss()
    heap_base = heap.start().peak
    model = build_model(cfg.model, args.classes, names).to(device).train()
    after_build = torch.cuda.memory_allocated() if device.type == "cuda" else current_rss()
    batch = synthetic_batch(cfg, args.batch, args.classes, device)
    step = make_step(model, cfg, batch, device)
    wall, cpu = time_steps(step, args.warmup, args.steps, device)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss()
    peak_live = heap.stop() - heap_base if heap.available and device.type == "cpu" else None
    return {
        "case": args.case,
        "amp": args.amp,
        "grad_ckpt": getattr(args, "grad_ckpt", "off") == "on",
        "host_mmap_mib": mmap_mib,
        "device": device.type,
        "step_wall_s": wall,
        "step_cpu_s": cpu,
        "peak_mem_bytes": peak - base,
        "peak_live_bytes": peak_live,
        "model_mem_bytes": after_build - base,
        **parameter_counts(model),
        "loadavg": list(os.getloadavg()),
    }


def ratios(cases: dict, key: str) -> dict:
    """Adapter case / its full-FT baseline, for a summarised field (median over repetitions)."""
    out = {}
    for name, r in cases.items():
        base = CASES[r["case"]]["baseline"]
        if not (base or r["grad_ckpt"]):
            continue
        base_key = f"{base or r['case']}@{r['amp']}"  # full FT without checkpointing
        if base_key in cases and name != base_key:
            out[name] = cases[name][key]["median"] / cases[base_key][key]["median"]
    return out


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The backbones, clip size, batch and classes a case is built at (what ``experiment`` and
    ``synthetic_batch`` read); train_step_paired.py takes the same."""
    p.add_argument("--model", default="vit_base_patch16_224", help="timm backbone for full/linear/mhva_pt/cm3t")
    p.add_argument("--clip-model", default="ViT-B-16-quickgelu", help="open_clip backbone for full_clip/m2clip")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1, help="clips per step")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--modality-dim", type=int, default=1024, help="CM3T side feature width (audio, flow)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated, from {sorted(CASES)}")
    add_model_args(p)
    p.add_argument("--steps", type=int, default=3, help="timed steps per repetition")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, kernels)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per case (interleaved across cases)")
    p.add_argument("--amp", default="off", help="comma-separated optim.amp values to measure: off, bf16, fp16")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--grad-ckpt", default="off", help="comma-separated: off, on (model.grad_checkpointing)")
    p.add_argument("--host-mmap", default="auto",
                   help="scaling.host_mmap_mib: auto (4 MiB with checkpointing on CPU), 0 = glibc's default, or MiB")
    add_run_args(p, "train_step")
    args = p.parse_args(argv)

    if args.worker:
        emit(worker(args))
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    amps = [a.strip() for a in args.amp.split(",") if a.strip()]
    ckpts = [c.strip() for c in args.grad_ckpt.split(",") if c.strip()]
    if set(ckpts) - {"off", "on"}:
        p.error(f"--grad-ckpt takes off and/or on, got {args.grad_ckpt!r}")
    common_args = [f"--model={args.model}", f"--clip-model={args.clip_model}", f"--frames={args.frames}",
                   f"--img-size={args.img_size}", f"--batch={args.batch}", f"--classes={args.classes}",
                   f"--modality-dim={args.modality_dim}", f"--steps={args.steps}", f"--warmup={args.warmup}",
                   f"--device={args.device}", f"--threads={args.threads}", f"--host-mmap={args.host_mmap}"]
    runs: dict[str, list[dict]] = {}
    started = time.time()
    info = machine(pick_device(args.device))
    for rep in range(args.repeats):  # interleaved, so slow drifts in machine load hit every case alike
        for amp in amps:
            for ckpt in ckpts:
                for case in cases:
                    r = run_isolated(Path(__file__), ["--worker=step", *common_args, f"--case={case}", f"--amp={amp}",
                                                      f"--grad-ckpt={ckpt}"])
                    runs.setdefault(f"{case}@{amp}" + ("+ckpt" if ckpt == "on" else ""), []).append(r)
                    print(f"[{rep + 1}/{args.repeats}] {case:10s} amp={amp:4s} ckpt={ckpt:3s} "
                          f"step {min(r['step_wall_s']):6.2f}s peak {fmt_mib(r['peak_mem_bytes'])} "
                          f"load {r['loadavg'][0]:.1f}", flush=True)

    table = {}
    for key, rs in runs.items():
        first = rs[0]
        table[key] = {
            "case": first["case"], "amp": first["amp"], "grad_ckpt": first["grad_ckpt"],
            "host_mmap_mib": first.get("host_mmap_mib"),
            # per repetition: the median step of that process; then median/spread over repetitions
            "step_wall_s": summary([statistics.median(r["step_wall_s"]) for r in rs]),
            "step_cpu_s": summary([statistics.median(r["step_cpu_s"]) for r in rs]),
            # the least disturbed step of all repetitions: on a shared machine the closest to the true cost
            "step_best_s": {"median": min(min(r["step_wall_s"]) for r in rs)},
            "peak_mem_bytes": summary([r["peak_mem_bytes"] for r in rs]),
            "peak_live_bytes": summary([r["peak_live_bytes"] for r in rs if r.get("peak_live_bytes") is not None]),
            "model_mem_bytes": summary([r["model_mem_bytes"] for r in rs]),
            "trainable_params": first["trainable_params"],
            "backbone_params": first["backbone_params"],
            "trainable_pct": first["trainable_pct"],
            "loadavg_during": [r["loadavg"][0] for r in rs],
        }
    result = {
        "benchmark": "train_step",
        "command": "python benchmarks/train_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "case")},
        "machine": info,
        "loadavg_end": list(os.getloadavg()),
        "seconds": time.time() - started,
        "cases": table,
        "ratio_to_full_ft": {
            "step_wall": ratios(table, "step_wall_s"),
            "step_cpu": ratios(table, "step_cpu_s"),
            "step_best": ratios(table, "step_best_s"),
            "peak_mem": ratios(table, "peak_mem_bytes"),
            "peak_live": ratios(table, "peak_live_bytes") if all(t["peak_live_bytes"]["n"] for t in table.values()) else {},
        },
        # issue #16's targets on CPU: MHVA+PT <= 0.75x and M2-CLIP <= 0.85x of full FT's step; with
        # gradient checkpointing, peak memory <= 0.5x full FT's (no checkpointing) at ViT-B/16, 8 frames
        "targets": {"step_ratio_max": {"mhva_pt@off": 0.75, "m2clip@off": 0.85},
                    "peak_mem_ratio_max": {"mhva_pt@off+ckpt": 0.5, "m2clip@off+ckpt": 0.5}},
    }
    path = write_result("train_step", result, Path(args.out) if args.out else None)
    print(f"\n{'case':16s} {'step wall s':>16s} {'best s':>7s} {'cpu s':>7s} {'peak mem':>11s} {'trainable':>10s} "
          f"{'x full (wall/best/cpu/mem)':>27s}")
    rw, rb, rc, rm = (result["ratio_to_full_ft"][k] for k in ("step_wall", "step_best", "step_cpu", "peak_mem"))
    rl = result["ratio_to_full_ft"]["peak_live"]
    for key, t in table.items():
        w = t["step_wall_s"]
        rel = f"{rw[key]:.2f}/{rb[key]:.2f}/{rc[key]:.2f}/{rm[key]:.2f}" if key in rw else "-"
        print(f"{key:16s} {w['median']:7.2f} ±{w['spread'] * 100:4.0f}%   {t['step_best_s']['median']:7.2f} "
              f"{t['step_cpu_s']['median']:7.2f} "
              f"{fmt_mib(t['peak_mem_bytes']['median']):>11s} {t['trainable_pct']:9.2f}% {rel:>22s}"
              + (f"  live heap {fmt_mib(t['peak_live_bytes']['median'])}" if t["peak_live_bytes"]["n"] else "")
              + (f" ({rl[key]:.2f}x)" if key in rl else "")
              + (f"  [malloc mmap >= {t['host_mmap_mib']:g} MiB]" if t.get("host_mmap_mib") else ""))
    verdicts = [f"{key} {kind} {r[key]:.2f}x {'<=' if r[key] <= limit else '>'} {limit}x"
                for kind, r, limits in (("step", rw, result["targets"]["step_ratio_max"]),
                                        ("peak mem", rm, result["targets"]["peak_mem_ratio_max"]))
                for key, limit in limits.items() if key in r]
    print("targets (issue #16): " + ("; ".join(verdicts) or "none of the measured cases has one")
          + f"; load {info['loadavg'][0]:.1f} -> {result['loadavg_end'][0]:.1f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
