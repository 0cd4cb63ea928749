"""GPU suite: clips/s, peak memory and MFU of each training preset, plus decode throughput per CPU core.

One script for one GPU, under 5 minutes: the presets full FT, MHVA+PT and CM3T (Video Swin-B) and M2-CLIP
(CLIP ViT-B/16), each at 8 and 16 frames, 224 px, bf16 autocast, with and without gradient checkpointing
(``model.grad_checkpointing``). Every cell builds the preset's model (``components.model.build_model``) and
times the engine's training step (benchmarks/train_step.py's ``make_step``: ``TrainStep``); the model and its
optimizer are freed before the next cell, so one process serves all cells:

- clips/s: batch / median step time (after ``--warmup`` untimed steps);
- peak memory: CUDA: ``max_memory_allocated`` during the cell minus what was allocated before it; CPU: the
  resident-set high-water mark (reset per cell through /proc/self/clear_refs) minus the RSS before it;
- MFU: 3 x forward FLOPs (components/flops.py) per second over the device's measured GEMM peak in the same
  dtype (benchmarks/mfu.py's ``gemm_rate``); recomputation by checkpointing is not counted as useful work.

Decode throughput per CPU core: benchmarks/ingest_throughput.py's plain loop (``decode_clip``, one clip after
another) per decoder, pinned to one core, on synthetic 256 px videos (64 frames) decoded to 224 px.

    bash benchmarks/gpu_suite.sh                      # on a GPU machine: results/gpu_suite.json
    python benchmarks/gpu_suite.py --tiny             # tiny models on CPU (the test suite runs this)
    python benchmarks/gpu_suite.py --presets m2clip --frames 8 --batch 2
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, current_rss, machine, pick_device, summary, write_result  # noqa: E402

import ingest_throughput  # noqa: E402  (the plain decode loop)
import mfu  # noqa: E402  (the GEMM peak)
import train_step  # noqa: E402  (synthetic batch, the engine's step, the timing loop)

PRESETS = {
    "full_ft": "cm3t/full_ft.yaml",  # Video Swin-B, every weight trained
    "mhva_pt": "cm3t/mhva_pt.yaml",
    "cm3t": "cm3t/cm3t.yaml",  # MHVA + PT + CAA on audio and flow features
    "m2clip": "m2clip/m2clip_full.yaml",  # CLIP ViT-B/16 with TED, text adapters and the 4-head decoder
}
# --tiny: the same presets on tiny random-init backbones of the same family (CPU, seconds)
TINY_BACKBONES = {
    "video_swin": "{family: video_swin, name: swin3d_t, kwargs: {embed_dim: 16, depths: [1, 1], num_heads: [1, 2], "
                  "window_size: [2, 4, 4], stochastic_depth_prob: 0.0}}",
    "openclip_vit": "{family: openclip_vit, name: vidpeft-tiny-clip}",
}


def cell_config(preset: str, frames: int, ckpt: bool, a):
    """The preset's ExperimentConfig at this cell's frames, size, precision and checkpointing."""
    from pipelines.cli.args import load_experiment

    files = [str(train_step.PRESETS / PRESETS[preset])]
    sets = [f"model.backbone.num_frames={frames}", f"model.backbone.img_size={a.img_size}",
            f"model.grad_checkpointing={'true' if ckpt else 'false'}", f"optim.amp='{a.amp}'"]  # quoted: off
    if a.tiny:
        family = load_experiment(files, []).model.backbone.family
        sets.insert(0, f"model.backbone={TINY_BACKBONES[family]}")
    cfg = load_experiment(files, sets)
    for m in cfg.model.modalities:  # a manifest would supply these widths (CM3T: 1024-d audio / flow)
        m.dim = m.dim or a.modality_dim
    return cfg


def _free_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        try:  # hand freed heap pages back, so the next cell's RSS growth is its own
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS (Linux >= 4.0)
        except OSError:
            pass


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_cell(preset: str, frames: int, ckpt: bool, a, device) -> dict:
    import torch

    from components.flops import forward_flops
    from components.model import build_model

    cfg = cell_config(preset, frames, ckpt, a)
    names = [f"class {i}" for i in range(a.classes)]
    _free_memory(device)
    base = torch.cuda.memory_allocated() if device.type == "cuda" else current_rss()
    out = {"preset": preset, "frames": frames, "grad_checkpointing": ckpt, "batch": a.batch, "amp": a.amp,
           "backbone": cfg.model.backbone.name}
    model = step = batch = None
    try:
        model = build_model(cfg.model, a.classes, names).to(device).train()
        batch = train_step.synthetic_batch(cfg, a.batch, a.classes, device)
        flops = forward_flops(model, batch)  # the batch's forward FLOPs
        step = train_step.make_step(model, cfg, batch, device)
        wall, _ = train_step.time_steps(step, a.warmup, a.steps, device)
        peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _vm_hwm()) - base
        seconds = statistics.median(wall)
        out.update(step_s=summary(wall), clips_per_s=a.batch / seconds, peak_mem_bytes=peak,
                   forward_gflops_per_clip=flops / a.batch / 1e9, model_tflops_per_s=3 * flops / seconds / 1e12)
    except torch.cuda.OutOfMemoryError as e:  # one cell too big for this GPU: say so, keep going
        out["error"] = f"out of memory at batch {a.batch}: {str(e).splitlines()[0]}"
    finally:
        del model, step, batch
        _free_memory(device)
    return out


def decode_per_core(a) -> dict:
    """clips/s (and frames/s) of the plain decode loop per decoder, on one CPU core."""
    from components.data.manifest import read_manifest
    from components.data.synth import make_synthetic_dataset
    from components.video.decoders import decoder_names

    size, frames, clips = (64, 32, 8) if a.tiny else (256, 64, 32)
    data = Path(a.data_dir or f"/tmp/vidpeft_gpu_suite_{clips}x{frames}x{size}")
    manifest = data / "manifest.parquet"
    if not manifest.is_file():
        make_synthetic_dataset(data, num_classes=4, clips_per_class=clips // 4, frames=frames, size=size, seed=0,
                               val_fraction=0.0)
    cols = ["clip_id", "video_path", "start_frame", "end_frame", "start_sec", "end_sec"]
    rows = read_manifest(manifest, check_files=False).split("train").select(cols).to_pylist()
    cores = sorted(os.sched_getaffinity(0))
    out = {"videos": f"{len(rows)} synthetic clips, {frames} frames at {size} px", "core": cores[0]}
    os.sched_setaffinity(0, {cores[0]})
    try:
        for decoder in a.decoders.split(","):
            if decoder not in decoder_names():
                raise SystemExit(f"--decoders: unknown {decoder!r}; known: {', '.join(decoder_names())}")
            per_frames = {}
            for t in a.frames:
                ns = SimpleNamespace(num_frames=t, img_size=min(a.img_size, size), sampling="segment", stride=2,
                                     epochs=1, batch_size=8, seed=0, decoder=decoder)
                r = ingest_throughput.run_plain(rows, ns)
                per_frames[f"{t}f"] = {"clips_per_s_per_core": r["clips_per_s"],
                                       "frames_per_s_per_core": r["clips_per_s"] * t,
                                       "clips_per_cpu_s": r["clips_per_cpu_s"]}  # steadier on a shared machine
            out[decoder] = per_frames
    finally:
        os.sched_setaffinity(0, cores)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny models on CPU, 1 step per cell: the suite's own test")
    p.add_argument("--presets", default=",".join(PRESETS), help=f"comma-separated, from {list(PRESETS)}")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    p.add_argument("--grad-ckpt", default="off,on", help="model.grad_checkpointing settings to run: off, on or both")
    p.add_argument("--img-size", type=int, default=0, help="side in px (default 224; --tiny: 32)")
    p.add_argument("--batch", type=int, default=0, help="clips per step (default 8; --tiny: 1)")
    p.add_argument("--amp", default="bf16", help="optim.amp: bf16 (default), fp16 or off")
    p.add_argument("--steps", type=int, default=0, help="timed steps per cell (default 3; --tiny: 1)")
    p.add_argument("--warmup", type=int, default=-1, help="untimed steps first (default 1; --tiny: 0)")
    p.add_argument("--classes", type=int, default=0, help="classes of the head (default 400, Kinetics; --tiny: 4; "
                                                            "M2-CLIP encodes every class name each step)")
    p.add_argument("--modality-dim", type=int, default=1024, help="CM3T side feature width (audio, flow)")
    p.add_argument("--decoders", default="decord,pyav", help="decoders timed per CPU core ('' = skip)")
    p.add_argument("--data-dir", default="", help="synthetic videos for the decode figures (reused when present)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    p.add_argument("--out", default="", help="result file (default results/gpu_suite.json; --tiny: "
                                              "results/gpu_suite_tiny.json)")
    a = p.parse_args(argv)
    a.img_size = a.img_size or (32 if a.tiny else 224)
    a.batch = a.batch or (1 if a.tiny else 8)
    a.steps = a.steps or (1 if a.tiny else 3)
    a.classes = a.classes or (4 if a.tiny else 400)
    a.warmup = a.warmup if a.warmup >= 0 else (0 if a.tiny else 1)
    presets = [x.strip() for x in a.presets.split(",") if x.strip()]
    unknown = [x for x in presets if x not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {unknown}; known: {list(PRESETS)}")
    ckpts = [c.strip() == "on" for c in a.grad_ckpt.split(",") if c.strip()]
    if not ckpts or any(c.strip() not in ("off", "on") for c in a.grad_ckpt.split(",") if c.strip()):
        p.error(f"--grad-ckpt takes off and/or on, got {a.grad_ckpt!r}")

    import torch

    device = torch.device(pick_device(a.device))
    if device.type == "cpu" and not a.tiny:
        print("gpu_suite: no CUDA device; the full-size suite is meant for a GPU (use --tiny on CPU, or "
              "--device cpu to insist)", file=sys.stderr)
        if a.device != "cpu":
            return 2
    started = time.time()
    dtype = {"bf16": "bf16", "fp16": "fp16"}.get(a.amp, "fp32")
    n = 256 if a.tiny else 8192
    gemm = mfu.gemm_rate(n, n, n, dtype, device.type, 3 if a.tiny else 5)
    peak_flops = max(gemm["flops_per_s"]["values"])
    cells = []
    total = len(presets) * len(a.frames) * len(ckpts)
    for preset in presets:
        for frames in a.frames:
            for ckpt in ckpts:
                c = run_cell(preset, frames, ckpt, a, device)
                if "error" not in c:
                    c["mfu"] = c["model_tflops_per_s"] * 1e12 / peak_flops
                cells.append(c)
                shown = c.get("error") or (f"{c['clips_per_s']:8.2f} clips/s  peak {c['peak_mem_bytes'] / 2**30:6.2f} GiB"
                                           f"  MFU {c['mfu']:6.1%}")
                print(f"[{len(cells)}/{total} {time.time() - started:5.0f}s] {preset:8s} {frames:2d}f "
                      f"ckpt {'on ' if ckpt else 'off'}  {shown}", flush=True)
    decode = decode_per_core(a) if a.decoders else {}
    for name, per in decode.items():
        if isinstance(per, dict):
            print("decode per core, " + name + ": " + ", ".join(f"{k} {v['clips_per_s_per_core']:.1f} clips/s"
                                                                for k, v in per.items()), flush=True)
    result = {
        "benchmark": "gpu_suite", "mode": "tiny" if a.tiny else "full",
        "command": "python benchmarks/gpu_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(a).items()},
        "machine": machine(device.type),
        "peak": {"dtype": dtype, "gemm": gemm["shape"], "flops_per_s": peak_flops},
        "cells": cells, "decode": decode,
        "seconds": time.time() - started,
        "loadavg_end": list(os.getloadavg()),
    }
    default = ROOT / "benchmarks" / "results" / ("gpu_suite_tiny.json" if a.tiny else "gpu_suite.json")
    path = write_result("gpu_suite", result, Path(a.out) if a.out else default)
    bad = [c for c in cells if "error" in c or not math.isfinite(c.get("clips_per_s", math.nan))]
    print(f"{len(cells) - len(bad)}/{len(cells)} cells measured in {result['seconds']:.0f}s; wrote {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
