"""Ingest throughput: the Ray Data pipeline vs a plain single-process loop, per decoder.

The plain loop runs once per decoder of ``--decoders`` (decode_clip with data.decoder = that name,
no fallback), so the decoders are compared on the same files; the Ray pipeline uses the first one.
All modes decode the same clips (same files, same ClipSpec, same per-clip seeded sampling, same batch
size) pinned to the same CPU cores, each in a fresh subprocess so their memory is measured
apart. Measured per mode: clips/s over whole epochs (start-up included) and in steady state
(from the first batch on), and the peak memory of the whole process tree (driver, Ray's
raylet/GCS and decoder workers) as PSS, which counts shared pages (the object store) once.

    python benchmarks/ingest_throughput.py                    # synthetic data, defaults
    python benchmarks/ingest_throughput.py --manifest M.parquet --split train --clips 500
    python benchmarks/ingest_throughput.py --decoders decord,pyav --actors    # decoders only, no Ray
    python benchmarks/ingest_throughput.py --source s3   # from a local S3 server: per-file, shards, cache

Writes benchmarks/results/ingest_throughput.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "ingest_throughput.json"


# ---------------------------------------------------------------- memory of a process tree

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name field may contain spaces
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    kids, todo, pids = _children(), [root], []
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(kids.get(pid, []))
    return pids


def tree_pss_mb(root: int) -> float:
    return sum(_pss_kb(pid) for pid in _tree(root)) / 1024


def _kind(pid: int, root: int) -> str:
    """Which part of the pipeline a process is: what its memory is spent on."""
    if pid == root:
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "ClipDecoder" in cmd:
        return "decoder_actors"
    if cmd.startswith("ray::"):
        return "ray_workers"  # pooled Ray workers: idle ones, tasks, Ray Data's own actors (stats, coordinators)
    for name in ("gcs_server", "raylet"):
        if name in cmd.split(" ", 1)[0]:
            return name
    return "ray_agents"  # Ray's helper processes (log monitor, runtime-env and dashboard agents)


def breakdown_mb(root: int) -> dict[str, float]:
    """PSS per part of the process tree (MB); shared pages (the object store) are split among users."""
    parts: dict[str, float] = {}
    for pid in _tree(root):
        kind = _kind(pid, root)
        parts[kind] = parts.get(kind, 0.0) + _pss_kb(pid) / 1024
    return {k: round(v, 1) for k, v in sorted(parts.items())}


class MemoryMonitor:
    """Samples the PSS of this process and all its descendants every `period` seconds (with
    ``breakdown``, per part of the tree too: the peak's parts say where the memory goes)."""

    def __init__(self, period: float = 0.25, breakdown: bool = False) -> None:
        self.period, self.samples, self.breakdown = period, [], breakdown
        self.parts_at_peak: dict[str, float] = {}
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        if not self.breakdown:
            return tree_pss_mb(os.getpid())
        parts = breakdown_mb(os.getpid())
        total = sum(parts.values())
        if total > self.peak:
            self.peak, self.parts_at_peak = total, parts
        return total

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - start, self._sample()))
            self._stop.wait(self.period)

    def __enter__(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mark(self) -> float:
        """Peak PSS (MB) since the previous mark: per-epoch peaks show whether memory grows."""
        start = getattr(self, "_mark", 0)
        self._mark = len(self.samples)
        self.samples.append((0.0, tree_pss_mb(os.getpid())))
        return round(max(m for _, m in self.samples[start:]), 1)

    def summary(self) -> dict:
        out = {"peak_pss_mb": round(max([m for _, m in self.samples] or [0.0]), 1)}
        if self.breakdown:
            out["peak_parts_mb"] = self.parts_at_peak
        return out


# ---------------------------------------------------------------- the two modes (subprocesses)

def _rng(seed: int, clip_id: str, visit: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(clip_id.encode()), visit])  # as ClipDecoder


def run_plain(rows: list[dict], a) -> dict:
    """The baseline: decode_clip with one decoder (open, sample, decode, release), one clip after another."""
    from components.video.decode import ClipSpec, VideoDecodeError, decode_clip

    spec = ClipSpec(num_frames=a.num_frames, size=a.img_size, sampling=a.sampling, stride=a.stride)
    ranges = ("start_frame", "end_frame", "start_sec", "end_sec")
    epochs = []
    with MemoryMonitor() as mon:
        for epoch in range(a.epochs):
            start, batch, clips, first = time.perf_counter(), [], 0, None
            cpu0 = time.process_time()  # this process only: the decoder's own work, steadier under load
            for r in rows:
                try:
                    batch.append(decode_clip(r["video_path"], spec, rng=_rng(a.seed, r["clip_id"], epoch),
                                             decoder=a.decoder, **{k: r[k] for k in ranges}))
                except VideoDecodeError:  # the pipeline skips broken files; so does the loop
                    batch.append(np.zeros((a.num_frames, a.img_size, a.img_size, 3), np.uint8))
                if len(batch) == a.batch_size:
                    np.stack(batch)
                    clips += len(batch)
                    batch = []
                    first = first or (time.perf_counter(), clips)
            if batch:
                np.stack(batch)
                clips += len(batch)
            epochs.append({**_epoch(start, first, clips), "cpu_seconds": round(time.process_time() - cpu0, 3),
                           "peak_pss_mb": mon.mark()})
    cpu = sum(e["cpu_seconds"] for e in epochs)
    return {"epochs": epochs, **_totals(epochs), **mon.summary(),
            "clips_per_cpu_s": round(sum(e["clips"] for e in epochs) / max(cpu, 1e-9), 2)}


def run_ray(rows_table, a, warm: bool) -> dict:
    """The Ray Data pipeline as training runs it. ``warm``: one stream over all epochs (one decoder pool
    for the run, pipelines/data/epoch_stream.py); else a dataset per epoch (a new pool each epoch, as
    before the stream)."""
    import ray

    from pipelines.data.epoch_stream import split_epochs
    from pipelines.data.ingest import DecodeSettings, build_dataset

    ray.init(num_cpus=len(a.cores), include_dashboard=False, log_to_driver=False,
             object_store_memory=a.object_store_mb * 1024 * 1024)
    time.sleep(2.0)  # let Ray's own processes finish starting: what they hold then is its fixed cost
    idle = breakdown_mb(os.getpid())
    settings = DecodeSettings(num_frames=a.num_frames, size=a.img_size, sampling=a.sampling, stride=a.stride,
                              training=True, seed=a.seed, task="single_label", num_outputs=1, decoder=a.decoder)

    def dataset(epochs):
        return build_dataset(rows_table, settings, decode_actors=a.actors, decode_cpus=a.decode_cpus,
                             decode_batch_size=a.decode_batch_size, epochs=epochs)

    def batches(ds):
        return ds.iter_batches(batch_size=a.batch_size, batch_format="numpy", drop_last=False)

    stream = split_epochs(batches(dataset(range(a.epochs))), rows_table.num_rows, a.batch_size) if warm else None
    epochs = []
    with MemoryMonitor(breakdown=True) as mon:
        for e in range(a.epochs):
            start, clips, first = time.perf_counter(), 0, None
            for b in (next(stream) if warm else batches(dataset(range(e, e + 1)))):
                clips += len(b["video"])
                first = first or (time.perf_counter(), clips)
            epochs.append({**_epoch(start, first, clips), "peak_pss_mb": mon.mark()})
    ray.shutdown()
    return {"epochs": epochs, **_totals(epochs), **mon.summary(), "idle_ray_mb": idle}


def _epoch(start: float, first: tuple[float, int] | None, clips: int) -> dict:
    end = time.perf_counter()
    out = {"clips": clips, "seconds": round(end - start, 3)}
    if first is not None:
        t0, c0 = first
        out["first_batch_s"] = round(t0 - start, 3)
        out["steady_clips"], out["steady_seconds"] = clips - c0, round(end - t0, 3)
    return out


def _totals(epochs: list[dict]) -> dict:
    clips = sum(e["clips"] for e in epochs)
    secs = sum(e["seconds"] for e in epochs)
    sc = sum(e.get("steady_clips", 0) for e in epochs)
    ss = sum(e.get("steady_seconds", 0.0) for e in epochs)
    return {"clips": clips, "seconds": round(secs, 3), "clips_per_s": round(clips / secs, 2),
            "steady_clips_per_s": round(sc / ss, 2) if ss > 0 else None,
            "mean_first_batch_s": round(float(np.mean([e.get("first_batch_s", 0.0) for e in epochs])), 3),
            "first_batch_s": epochs[0].get("first_batch_s") if epochs else None,  # the first epoch: start-up
            "later_first_batch_s": max([e.get("first_batch_s", 0.0) for e in epochs[1:]], default=None)}


def worker_main(a) -> None:
    """Runs inside the pinned subprocess; prints one JSON line."""
    os.sched_setaffinity(0, a.cores)
    import pyarrow as pa

    from components.data.manifest import read_manifest

    table = read_manifest(a.manifest, check_files=False).split(a.split)
    if a.clips:
        table = table.slice(0, a.clips)
    if a.tile > 1:
        tiles = []
        for k in range(a.tile):
            ids = pa.array([f"{c}#{k}" for c in table["clip_id"].to_pylist()], pa.string())
            tiles.append(table.set_column(table.schema.get_field_index("clip_id"), "clip_id", ids))
        table = pa.concat_tables(tiles)
    if a.mode == "plain":
        cols = ["clip_id", "video_path", "start_frame", "end_frame", "start_sec", "end_sec"]
        result = run_plain(table.select(cols).to_pylist(), a)
    else:
        result = run_ray(table, a, warm=a.mode == "ray")
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", default="", help="benchmark these clips (default: a synthetic set)")
    p.add_argument("--split", default="train")
    p.add_argument("--data-dir", default="", help="where the synthetic set goes (default: a /tmp folder "
                                                  "named after its size; reused when present)")
    p.add_argument("--synth-clips", type=int, default=96, help="synthetic clips (4 classes)")
    p.add_argument("--synth-frames", type=int, default=64, help="frames per synthetic video")
    p.add_argument("--synth-size", type=int, default=128, help="synthetic video side (px)")
    p.add_argument("--clips", type=int, default=0, help="use the first N clips of the split (0 = all)")
    p.add_argument("--tile", type=int, default=1,
                   help="repeat the clips N times per epoch (new clip ids, so new seeded samples): long "
                        "epochs from a small set of files")
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--sampling", default="segment", choices=("segment", "uniform", "strided"))
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--decode-batch-size", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per mode, interleaved (plain, ray, plain, ray, ...) so a change in machine "
                        "load hits every mode alike; the median run is reported")
    p.add_argument("--decoders", default="decord,pyav",
                   help="comma-separated decoders (components/video/decoders): a plain loop each; Ray uses the first")
    p.add_argument("--actors", type=int, nargs="*", default=[1],
                   help="decoder actor counts to run on Ray (none: the plain loops only)")
    p.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs reserved per decoder actor")
    p.add_argument("--cores", type=int, nargs="+", default=sorted(os.sched_getaffinity(0)),
                   help="CPU cores both modes are pinned to")
    p.add_argument("--object-store-mb", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--cold", action="store_true",
                   help="also run Ray the old way, a dataset (and decoder pool) per epoch, to show what the "
                        "one-stream pipeline saves")
    p.add_argument("--mode", choices=("plain", "ray", "ray_cold"), help=argparse.SUPPRESS)  # subprocess role
    p.add_argument("--decoder", default="decord", help=argparse.SUPPRESS)  # the subprocess's decoder
    return p.parse_args(argv)


def _subprocess(a, mode: str, actors: int = 1, decoder: str = "decord") -> dict:
    argv = [sys.executable, __file__, "--mode", mode, "--decoder", decoder, "--manifest", a.manifest, "--split", a.split,
            "--clips", str(a.clips), "--tile", str(a.tile), "--num-frames", str(a.num_frames), "--img-size", str(a.img_size),
            "--sampling", a.sampling, "--stride", str(a.stride), "--batch-size", str(a.batch_size),
            "--decode-batch-size", str(a.decode_batch_size), "--epochs", str(a.epochs),
            "--actors", str(actors), "--decode-cpus", str(a.decode_cpus), "--seed", str(a.seed),
            "--object-store-mb", str(a.object_store_mb), "--cores", *map(str, a.cores)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always a private local Ray
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{mode} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--source" in argv:  # --source s3: the object-storage comparison (benchmarks/ingest_s3.py)
        i = argv.index("--source")
        source = argv[i + 1] if i + 1 < len(argv) else ""
        if source == "s3":
            from benchmarks.ingest_s3 import main as s3_main

            return s3_main(argv[:i] + argv[i + 2:])
        if source != "local":
            raise SystemExit(f"--source must be local or s3, got {source!r}")
        argv = argv[:i] + argv[i + 2:]
    a = parse_args(argv)
    if a.mode:
        a.actors = a.actors[0]
        worker_main(a)
        return 0
    if not a.manifest:
        from components.data.synth import make_synthetic_dataset

        data = Path(a.data_dir or f"/tmp/vidpeft_bench_{a.synth_clips}x{a.synth_frames}x{a.synth_size}")
        manifest = data / "manifest.parquet"
        if not manifest.is_file():
            make_synthetic_dataset(data, num_classes=4, clips_per_class=max(a.synth_clips // 4, 1),
                                   frames=a.synth_frames, size=a.synth_size, seed=0, val_fraction=0.0)
        a.manifest = str(manifest)
    from components.video.decoders import decoder_names

    decoders = [d.strip() for d in a.decoders.split(",") if d.strip()]
    unknown = [d for d in decoders if d not in decoder_names()]
    if not decoders or unknown:
        raise SystemExit(f"--decoders: unknown {unknown or 'empty'}; known: {', '.join(decoder_names())}")
    runs: dict[str, list[dict]] = {}
    for _ in range(a.repeats):
        for d in decoders:
            runs.setdefault(f"plain_{d}", []).append(_subprocess(a, "plain", decoder=d))
        for n in a.actors:
            for mode in ("ray", "ray_cold") if a.cold else ("ray",):
                name = f"{mode}_{n}_actor{'s' if n > 1 else ''}_{decoders[0]}"
                runs.setdefault(name, []).append(_subprocess(a, mode, n, decoders[0]))
    results = {}
    for name, rs in runs.items():
        best = sorted(rs, key=lambda r: r["clips_per_s"])[len(rs) // 2]  # the median run
        steady = [r["steady_clips_per_s"] for r in rs if r["steady_clips_per_s"]]
        results[name] = {**best, "steady_clips_per_s": float(np.median(steady)) if steady else None,
                         "all_clips_per_s": [r["clips_per_s"] for r in rs], "all_steady_clips_per_s": steady}
        if "clips_per_cpu_s" in best:  # plain loops: per CPU second, the median over repeats
            results[name]["clips_per_cpu_s"] = float(np.median([r["clips_per_cpu_s"] for r in rs]))
            results[name]["all_clips_per_cpu_s"] = [r["clips_per_cpu_s"] for r in rs]
    baseline = f"plain_{decoders[0]}"
    plain = results[baseline]
    summary = {name: {"ratio_vs_plain": round(r["clips_per_s"] / plain["clips_per_s"], 3),
                      "steady_ratio_vs_plain": (round(r["steady_clips_per_s"] / plain["steady_clips_per_s"], 3)
                                                if r["steady_clips_per_s"] and plain["steady_clips_per_s"] else None)}
               for name, r in results.items() if name != baseline}
    record = {
        "command": " ".join([Path(sys.executable).name, "benchmarks/ingest_throughput.py", *(argv or sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "cores_used": a.cores, "platform": platform.platform(),
                    "python": platform.python_version()},
        "settings": {k: getattr(a, k) for k in ("manifest", "split", "clips", "tile", "num_frames", "img_size", "sampling",
                                                "batch_size", "decode_batch_size", "epochs", "repeats",
                                                "decode_cpus", "object_store_mb")},
        "decoders": decoders, "baseline": baseline,
        "load_average_after": os.getloadavg(),
        "results": results, "summary": summary, "target_ratio": 0.9,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"{'mode':<24}{'clips/s':>9}{'steady':>9}{'ratio':>7}{'steady':>8}{'1st batch s':>13}{'later':>7}"
          f"   peak PSS MB per epoch")
    for name, r in results.items():
        s = summary.get(name, {"ratio_vs_plain": 1.0, "steady_ratio_vs_plain": 1.0})
        peaks = ", ".join(str(e["peak_pss_mb"]) for e in r["epochs"])
        print(f"{name:<24}{r['clips_per_s']:>9}{str(r['steady_clips_per_s']):>9}{s['ratio_vs_plain']:>7}"
              f"{str(s['steady_ratio_vs_plain']):>8}{str(r['first_batch_s']):>13}{str(r['later_first_batch_s']):>7}"
              f"   {peaks}")
    for name, r in results.items():
        if "idle_ray_mb" in r:  # where the memory goes: Ray's fixed cost, then the pipeline's parts at its peak
            print(f"{name}: idle Ray {sum(r['idle_ray_mb'].values()):.0f} MB {r['idle_ray_mb']}; "
                  f"at the peak {r['peak_pss_mb']:.0f} MB {r['peak_parts_mb']}")
    for name, r in results.items():
        if "clips_per_cpu_s" in r:
            print(f"{name}: {r['clips_per_cpu_s']} clips per CPU second (runs: {r['all_clips_per_cpu_s']})")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
