"""GPU suite: clips/s, peak memory, MFU and HFU of each training preset, decode per CPU core, one end-to-end cell.

One script for one GPU, under 5 minutes: the presets full FT, MHVA+PT and CM3T (Video Swin-B) and M2-CLIP
(CLIP ViT-B/16), each at 8 and 16 frames, 224 px, bf16 autocast, with and without gradient checkpointing
(``model.grad_checkpointing``). Every cell builds the preset's model (``components.model.build_model``) and
times the engine's training step (benchmarks/train_step.py's ``make_step``: ``TrainStep``); the model and its
optimizer are freed before the next cell, so one process serves all cells. Per cell, in this order:

1. ``--warmup`` untimed steps (at least one: kernels, allocator, M2-CLIP's cached frozen text prefix);
2. one counted step (``components.flops.count_step``): model FLOPs = what the step needs (forward, input
   gradients, weight gradients of trained weights only: a frozen layer ~2x its forward, a trained one 3x;
   M2-CLIP's text side with the step's own classes and prompts), executed FLOPs = that plus the forward
   that checkpointing recomputes;
3. peak memory reset, then ``--steps`` timed steps: clips/s = batch / median step; peak memory = the peak
   during the timed steps minus what was allocated before the model was built (CUDA:
   ``max_memory_allocated``; CPU: the resident-set high-water mark, reset through /proc/self/clear_refs);
   MFU / HFU = model / executed FLOPs per second over the device's measured GEMM peak in the same dtype
   (benchmarks/mfu.py's ``gemm_rate``).

Each cell is isolated: any exception is recorded in that cell's entry (its type and first line) and the
run goes on; the JSON is rewritten (atomically) before and after every cell, so a crash leaves the cells
done so far and names the cell that was running (``"status": "running"``).

Decode throughput per CPU core: benchmarks/ingest_throughput.py's plain loop (``decode_clip``, one clip after
another) per decoder, pinned to one core, after an untimed warm-up pass, on synthetic 256 px videos (64
frames) decoded to 224 px. The end-to-end cell (benchmarks/gpu_e2e.py): Ray Data decode -> host-to-device
-> step with this process as the one worker; it says whether the step is data-bound or compute-bound and
how many decoder CPUs would keep it fed.

    bash benchmarks/gpu_suite.sh                      # on a GPU machine; prints where the JSON went
    python benchmarks/gpu_suite.py --tiny             # tiny models on CPU (the test suite runs this)
    python benchmarks/gpu_suite.py --presets m2clip --frames 8 --batch 2 --out results/m2clip.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import current_rss, machine, pick_device, summary, write_result  # noqa: E402

import gpu_e2e  # noqa: E402  (the end-to-end cell)
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


def cell_name(preset: str, frames: int, ckpt: bool) -> str:
    return f"{preset}/{frames}f/ckpt-{'on' if ckpt else 'off'}"


def error_line(e: BaseException) -> str:
    """``Type: first line of the message`` (CUDA errors span many lines)."""
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _injected(a, name: str) -> None:
    """--fail-cell NAME[:exit]: make this cell fail (an exception, or the process dying) to see the
    isolation and the partial JSON work."""
    target, _, how = a.fail_cell.partition(":")
    if target != name:
        return
    if how == "exit":
        os._exit(3)  # as a segfault or a killed process would: no cleanup, no final write
    raise RuntimeError(f"injected failure (--fail-cell {a.fail_cell})")


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS (Linux >= 4.0)
        except OSError:
            pass


def run_cell(preset: str, frames: int, ckpt: bool, a, device, peak_flops: float) -> dict:
    import torch

    from components.flops import count_step
    from components.model import build_model

    out = {"preset": preset, "frames": frames, "grad_checkpointing": ckpt, "batch": a.batch, "amp": a.amp}
    model = step = batch = None
    try:
        _injected(a, cell_name(preset, frames, ckpt))
        cfg = cell_config(preset, frames, ckpt, a)
        out["backbone"] = cfg.model.backbone.name
        names = [f"class {i}" for i in range(a.classes)]
        _free_memory(device)
        base = torch.cuda.memory_allocated() if device.type == "cuda" else current_rss()
        model = build_model(cfg.model, a.classes, names).to(device).train()
        batch = train_step.synthetic_batch(cfg, a.batch, a.classes, device)
        step = train_step.make_step(model, cfg, batch, device)
        for _ in range(max(a.warmup, 1)):  # caches and kernels a steady step reuses
            step()
        flops = count_step(step, model)  # one real step, counted as it runs
        _reset_peak(device)  # the peak window: the timed steps only
        wall, _ = train_step.time_steps(step, 0, a.steps, device)
        peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _vm_hwm()) - base
        seconds = statistics.median(wall)
        out.update(step_s=summary(wall), clips_per_s=a.batch / seconds, peak_mem_bytes=peak,
                   forward_gflops_per_clip=flops.forward / a.batch / 1e9,
                   model_gflops_per_step=flops.model / 1e9, executed_gflops_per_step=flops.executed / 1e9,
                   recomputed_gflops_per_step=flops.recomputed / 1e9, model_over_forward=flops.model / flops.forward,
                   model_tflops_per_s=flops.model / seconds / 1e12, mfu=flops.model / seconds / peak_flops,
                   hfu=flops.executed / seconds / peak_flops)
    except Exception as e:  # one cell failing (out of memory, a kernel, a config) must not lose the others
        out["error"] = (f"out of memory at batch {a.batch}: " if isinstance(e, torch.cuda.OutOfMemoryError)
                        else "") + error_line(e)
    finally:
        del model, step, batch
        _free_memory(device)
    return out


def synthetic_videos(a) -> tuple[Path, int, int]:
    """The synthetic videos' manifest (made once under --data-dir, reused), frames and size."""
    from components.data.synth import make_synthetic_dataset

    size, frames, clips = (64, 32, 8) if a.tiny else (256, 64, 32)
    data = Path(a.data_dir or Path(tempfile.gettempdir()) / f"vidpeft_gpu_suite_{clips}x{frames}x{size}")
    manifest = data / "manifest.parquet"
    if not manifest.is_file():
        make_synthetic_dataset(data, num_classes=4, clips_per_class=clips // 4, frames=frames, size=size, seed=0,
                               val_fraction=0.0, feature_dim=0)
    return manifest, frames, size


def decode_per_core(a) -> dict:
    """clips/s (and frames/s) of the plain decode loop per decoder, on one CPU core."""
    from components.data.manifest import read_manifest
    from components.video.decoders import decoder_names

    manifest, frames, size = synthetic_videos(a)
    cols = ["clip_id", "video_path", "start_frame", "end_frame", "start_sec", "end_sec"]
    rows = read_manifest(manifest, check_files=False).split("train").select(cols).to_pylist()
    cores = sorted(os.sched_getaffinity(0))
    out = {"videos": f"{len(rows)} synthetic clips, {frames} frames at {size} px", "core": cores[0]}
    os.sched_setaffinity(0, {cores[0]})
    try:
        for decoder in a.decoders.split(","):
            if decoder not in decoder_names():
                raise ValueError(f"--decoders: unknown {decoder!r}; known: {', '.join(decoder_names())}")
            per_frames = {}
            for t in a.frames:
                ns = SimpleNamespace(num_frames=t, img_size=min(a.img_size, size), sampling="segment", stride=2,
                                     epochs=1, batch_size=8, seed=0, decoder=decoder)
                ingest_throughput.run_plain(rows[:2], ns)  # warm-up: libraries, codec, file cache
                r = ingest_throughput.run_plain(rows, ns)
                per_frames[f"{t}f"] = {"clips_per_s_per_core": r["clips_per_s"],
                                       "frames_per_s_per_core": r["clips_per_s"] * t,
                                       "clips_per_cpu_s": r["clips_per_cpu_s"]}  # steadier on a shared machine
            out[decoder] = per_frames
    finally:
        os.sched_setaffinity(0, cores)
    return out


def default_out(tiny: bool) -> Path:
    """Outside the repository: $XDG_CACHE_HOME (or ~/.cache)/vidpeft/bench/gpu_suite[_tiny].json."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "vidpeft" / "bench" / ("gpu_suite_tiny.json" if tiny else "gpu_suite.json")


def isolated(part: str, fn) -> dict:
    """``fn()``'s result, or {"error": ...}: a failing part is recorded, the suite goes on."""
    try:
        return fn()
    except Exception as e:
        return {"error": error_line(e), "part": part}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny models on CPU, 1 step per cell: the suite's own test")
    p.add_argument("--presets", default=",".join(PRESETS), help=f"comma-separated, from {list(PRESETS)}")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    p.add_argument("--grad-ckpt", default="off,on", help="model.grad_checkpointing settings to run: off, on or both")
    p.add_argument("--img-size", type=int, default=0, help="side in px (default 224; --tiny: 32)")
    p.add_argument("--batch", type=int, default=0, help="clips per step (default 8; --tiny: 1)")
    p.add_argument("--amp", default="bf16", help="optim.amp: bf16 (default), fp16 or off")
    p.add_argument("--steps", type=int, default=0, help="timed steps per cell (default 3; --tiny: 1)")
    p.add_argument("--warmup", type=int, default=-1, help="untimed steps first, at least 1 (default 1; --tiny: 1)")
    p.add_argument("--classes", type=int, default=0, help="classes of the head (default 400, Kinetics; --tiny: 4; "
                                                            "M2-CLIP's training step encodes every class prompt)")
    p.add_argument("--modality-dim", type=int, default=1024, help="CM3T side feature width (audio, flow)")
    p.add_argument("--decoders", default="decord,pyav", help="decoders timed per CPU core ('' = skip)")
    p.add_argument("--data-dir", default="", help="synthetic videos for the decode and end-to-end figures "
                                                   "(made once, reused; default: in the temp dir)")
    p.add_argument("--e2e", default="mhva_pt", help="preset of the end-to-end cell (Ray Data -> device -> step) "
                                                     "at the first --frames, checkpointing off ('' = skip)")
    p.add_argument("--e2e-decoders", type=int, default=0, help="decoder actors of the end-to-end cell "
                                                                "(default: Ray's CPUs - 1)")
    p.add_argument("--e2e-decoder", default="decord", help="the end-to-end cell's decoder")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cpu")
    p.add_argument("--fail-cell", default="", help="make cell NAME (e.g. mhva_pt/8f/ckpt-off) raise, or with "
                                                    "NAME:exit end the process: checks the isolation and partial JSON")
    p.add_argument("--out", default="", help="result file (default ~/.cache/vidpeft/bench/gpu_suite.json; "
                                              "--tiny: gpu_suite_tiny.json)")
    a = p.parse_args(argv)
    a.img_size = a.img_size or (32 if a.tiny else 224)
    a.batch = a.batch or (1 if a.tiny else 8)
    a.steps = a.steps or (1 if a.tiny else 3)
    a.classes = a.classes or (4 if a.tiny else 400)
    a.warmup = a.warmup if a.warmup >= 0 else 1
    a.preset_list = [x.strip() for x in a.presets.split(",") if x.strip()]
    unknown = [x for x in a.preset_list + ([a.e2e] if a.e2e else []) if x not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {unknown}; known: {list(PRESETS)}")
    settings = [c.strip() for c in a.grad_ckpt.split(",") if c.strip()]
    if not settings or any(c not in ("off", "on") for c in settings):
        p.error(f"--grad-ckpt takes off and/or on, got {a.grad_ckpt!r}")
    a.ckpts = [c == "on" for c in settings]
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch

    device = torch.device(pick_device(a.device))
    if device.type == "cpu" and not a.tiny:
        print("gpu_suite: no CUDA device; the full-size suite is meant for a GPU (use --tiny on CPU, or "
              "--device cpu to insist)", file=sys.stderr)
        if a.device != "cpu":
            return 2
    started = time.time()
    out = Path(a.out).expanduser() if a.out else default_out(a.tiny)
    print(f"gpu_suite: writing {out} after every cell", flush=True)
    dtype = {"bf16": "bf16", "fp16": "fp16"}.get(a.amp, "fp32")
    n = 256 if a.tiny else 8192
    gemm = mfu.gemm_rate(n, n, n, dtype, device.type, 3 if a.tiny else 5)
    peak_flops = max(gemm["flops_per_s"]["values"])
    result = {
        "benchmark": "gpu_suite", "mode": "tiny" if a.tiny else "full",
        "command": "python benchmarks/gpu_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(a).items() if k not in ("preset_list", "ckpts")},
        "machine": machine(device.type),
        "peak": {"dtype": dtype, "gemm": gemm["shape"], "flops_per_s": peak_flops},
        "flop_counting": "one real step under FlopCounterMode (components.flops.count_step; matmul/conv/attention, "
                         "multiply-add = 2): model = forward + backward as needed (frozen weights: no weight "
                         "gradients), executed = model + the forward recomputed by checkpointing; MFU / HFU = "
                         "model / executed FLOPs per second over the measured GEMM peak",
        "cells": [], "decode": {}, "e2e": {}, "status": "running",
    }

    def save() -> None:
        result.update(seconds=time.time() - started, loadavg_end=list(os.getloadavg()))
        write_result("gpu_suite", result, out)

    cells = result["cells"]
    plan = [(p, f, c) for p in a.preset_list for f in a.frames for c in a.ckpts]
    for preset, frames, ckpt in plan:
        name = cell_name(preset, frames, ckpt)
        cells.append({"cell": name, "status": "running"})
        save()  # a crash inside the cell leaves the cells so far and names this one
        c = {"cell": name, **run_cell(preset, frames, ckpt, a, device, peak_flops)}
        c["status"] = "failed" if "error" in c else "measured"
        cells[-1] = c
        save()
        shown = c.get("error") or (f"{c['clips_per_s']:8.2f} clips/s  peak {c['peak_mem_bytes'] / 2**30:6.2f} GiB"
                                   f"  MFU {c['mfu']:6.1%}  HFU {c['hfu']:6.1%}")
        print(f"[{len(cells)}/{len(plan)} {time.time() - started:5.0f}s] {preset:8s} {frames:2d}f "
              f"ckpt {'on ' if ckpt else 'off'}  {shown}", flush=True)
    if a.decoders:
        result["decode"] = isolated("decode", lambda: decode_per_core(a))
        save()
    for name, per in result["decode"].items():
        if isinstance(per, dict):
            print("decode per core, " + name + ": " + ", ".join(f"{k} {v['clips_per_s_per_core']:.1f} clips/s"
                                                                for k, v in per.items()), flush=True)
        elif name == "error":
            print(f"decode per core: {per}", flush=True)
    if a.e2e:
        def e2e() -> dict:
            cfg = cell_config(a.e2e, a.frames[0], False, a)
            return {"preset": a.e2e, "frames": a.frames[0], **gpu_e2e.run_e2e(cfg, synthetic_videos(a)[0], a, device)}
        result["e2e"] = isolated("e2e", e2e)
        save()
        e = result["e2e"]
        print(f"end to end ({a.e2e}): " + (e.get("error") or
              f"{e['e2e_clips_per_s']:.2f} clips/s through Ray Data vs {e['clips_per_s']:.2f} on device; "
              f"{e['bound']}-bound (waiting {e['wait_fraction']:.0%}); {e['decoder_cpus_needed']} decoder CPU(s) "
              f"would keep the step fed ({e['decode_cpu_s_per_clip'] * 1e3:.0f} ms per clip)"), flush=True)
    bad = [c for c in cells if "error" in c or not math.isfinite(c.get("clips_per_s", math.nan))]
    parts_failed = [k for k in ("decode", "e2e") if "error" in result[k]]
    result["status"] = "done"
    save()
    print(f"{len(cells) - len(bad)}/{len(cells)} cells measured"
          + (f"; failed: {', '.join(parts_failed)}" if parts_failed else "")
          + f" in {result['seconds']:.0f}s; wrote {out}")
    return 1 if bad or parts_failed else 0


if __name__ == "__main__":
    sys.exit(main())
