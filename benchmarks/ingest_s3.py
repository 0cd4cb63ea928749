"""Ingest from object storage: clips/s read from a local S3-compatible server (moto on 127.0.0.1) per-file,
from tar shards (`vidpeft pack`) and through the per-node cache, each as a ratio to the same clips on local
disk, plus object reads (GETs) per clip.

The same clips (same files, ClipSpec, per-clip seeded sampling) are decoded one after another in this
process by data.decoder for ``--epochs`` epochs per mode; a mode's steady state is the median clips/s of
its epochs after the first (the cache's first epoch fills it). Each mode runs ``--repeats`` times,
interleaved, and the ratio is taken per repeat against that repeat's local run.

    python benchmarks/ingest_throughput.py --source s3            # this script, small defaults
    python benchmarks/ingest_s3.py --clips 96 --epochs 3 --repeats 3

Writes benchmarks/results/ingest_s3.json and prints a summary. The server is local, so this measures the
client-side cost (request round trips, copies, tar member cuts); a real bucket adds network latency per
GET, which shards and the cache remove per clip and per epoch respectively.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, summary, write_result  # noqa: E402


def _epoch_rows(rows: list[dict], seed: int, epoch: int, packed: bool) -> list[dict]:
    """The training order: a fresh permutation, or shards in a seeded order with rows shuffled within."""
    from pipelines.data.epoch_stream import epoch_order, grouped_epoch_order

    if not packed:
        return [rows[i] for i in epoch_order(len(rows), seed, epoch)]
    _, groups = np.unique([r["video_path"] for r in rows], return_inverse=True)
    return [rows[i] for g in grouped_epoch_order(groups, seed, epoch) for i in g]


def run_mode(rows: list[dict], a, packed: bool = False, cache_dir: str = "") -> dict:
    from components.data.packed import ShardReader
    from components.io import read_bytes
    from components.io.cache import ByteCache
    from components.video.decode import ClipSpec, decode_clip

    spec = ClipSpec(num_frames=a.num_frames, size=a.img_size, sampling="segment")
    gets = [0]

    def fetch(uri: str) -> bytes:
        gets[0] += 1
        return read_bytes(uri)

    cache = ByteCache(cache_dir, 10**10) if cache_dir else None
    source = (lambda u: cache.get(u, fetch)) if cache else fetch
    shards = ShardReader(source) if packed else None
    rates, per_epoch_gets = [], []
    for epoch in range(a.epochs):
        before, t0 = gets[0], time.perf_counter()
        for r in _epoch_rows(rows, a.seed, epoch, packed):
            rng = np.random.default_rng([a.seed, zlib.crc32(r["clip_id"].encode()), epoch])
            if shards is not None:
                data = shards.member(r["video_path"], r["member_offset"], r["member_size"])
                decode_clip(f"{r['video_path']}#{r['member']}", spec, rng=rng, decoder=a.decoder, data=data)
            else:
                decode_clip(r["video_path"], spec, rng=rng, decoder=a.decoder, fetch=source)
        rates.append(len(rows) / (time.perf_counter() - t0))
        per_epoch_gets.append((gets[0] - before) / len(rows))
    steady = rates[1:] or rates
    return {"clips_per_sec_epochs": [round(x, 2) for x in rates], "steady_clips_per_sec": statistics.median(steady),
            "gets_per_clip_epochs": [round(x, 4) for x in per_epoch_gets],
            "gets_per_clip_steady": statistics.median(per_epoch_gets[1:] or per_epoch_gets)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=48, help="synthetic clips (4 classes)")
    p.add_argument("--frames", type=int, default=32, help="frames per synthetic video")
    p.add_argument("--size", type=int, default=96, help="synthetic video side (px)")
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--shard-size", default="256KB", help="shard size for the packed mode (several shards per epoch)")
    p.add_argument("--decoder", default="decord")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    a = p.parse_args(argv)

    from components.data.manifest import read_manifest
    from components.data.packed import pack_manifest, parse_size
    from components.data.synth import make_synthetic_dataset
    from tests.s3_server import moto_s3

    with tempfile.TemporaryDirectory() as tmp, moto_s3() as s3:
        tmp = Path(tmp)
        manifest = make_synthetic_dataset(tmp / "data", num_classes=4, clips_per_class=max(a.clips // 4, 1),
                                          frames=a.frames, size=a.size, seed=a.seed)
        s3.upload_tree(manifest.parent, "data")
        report = pack_manifest(s3.uri("data/manifest.parquet"), s3.uri("packed"), parse_size(a.shard_size))
        local = read_manifest(manifest).table.to_pylist()
        remote = read_manifest(s3.uri("data/manifest.parquet")).table.to_pylist()
        packed = read_manifest(s3.uri("packed/manifest.parquet")).table.to_pylist()
        runs: dict[str, list[dict]] = {m: [] for m in ("local", "s3_files", "s3_shards", "s3_cache", "s3_shards_cache")}
        for rep in range(a.repeats):
            runs["local"].append(run_mode(local, a))
            runs["s3_files"].append(run_mode(remote, a))
            runs["s3_shards"].append(run_mode(packed, a, packed=True))
            runs["s3_cache"].append(run_mode(remote, a, cache_dir=str(tmp / f"cache{rep}")))
            runs["s3_shards_cache"].append(run_mode(packed, a, packed=True, cache_dir=str(tmp / f"scache{rep}")))
            print(f"repeat {rep + 1}/{a.repeats}: " + ", ".join(
                f"{m} {r[-1]['steady_clips_per_sec']:.1f}" for m, r in runs.items()), flush=True)
    modes = {}
    for m, rs in runs.items():
        ratios = [r["steady_clips_per_sec"] / base["steady_clips_per_sec"] for r, base in zip(rs, runs["local"])]
        modes[m] = {"steady_clips_per_sec": summary([r["steady_clips_per_sec"] for r in rs]),
                    "ratio_to_local": summary(ratios),
                    "gets_per_clip_first_epoch": rs[0]["gets_per_clip_epochs"][0],
                    "gets_per_clip_steady": rs[0]["gets_per_clip_steady"], "runs": rs}
    result = {"benchmark": "ingest_s3", "machine": machine(), "server": "moto_server on 127.0.0.1",
              "clips": len(local), "shards": report.shards, "shard_bytes": parse_size(a.shard_size),
              "dataset_bytes": report.bytes, "settings": {k: v for k, v in vars(a).items() if k != "out"},
              "modes": modes}
    path = write_result("ingest_s3", result, Path(a.out) if a.out else None)
    print(f"\n{len(local)} clips, {report.shards} shards, {a.epochs} epochs x {a.repeats} repeats ({a.decoder})")
    print(f"{'mode':<18}{'clips/s':>10}{'x local':>10}{'GETs/clip 1st':>15}{'steady':>10}")
    for m, d in modes.items():
        print(f"{m:<18}{d['steady_clips_per_sec']['median']:>10.1f}{d['ratio_to_local']['median']:>10.3f}"
              f"{d['gets_per_clip_first_epoch']:>15.3f}{d['gets_per_clip_steady']:>10.3f}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
