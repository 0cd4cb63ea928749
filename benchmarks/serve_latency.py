"""`vidpeft serve` latency: the unmerged LoRA run, its merged export and its ONNX export, in one run.

One model (a small random-init ViT with LoRA on every attention projection and MLP linear) is written as
a run directory, exported with `--merge` and with `--onnx`; each of the three is served in turn by Ray
Serve on 127.0.0.1 (one replica, the same CPU share and batching), and clients post a real mp4 over HTTP:
first 1 client, then 8 concurrent ones. Per request: the wall time from sending to the parsed answer
(decode + model + HTTP). Reported per model and concurrency: p50 / p95 latency, requests/s (requests
over the wall time of the whole level), and the ratios between the models (merged / unmerged, ONNX /
unmerged, ONNX / merged), from the same machine state. Writes benchmarks/results/serve_latency.json.

  /work/tools/heavy .venv/bin/python benchmarks/serve_latency.py --requests 40
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write_result  # noqa: E402
from tiny_runs import write_run  # noqa: E402

LEVELS = (1, 8)  # concurrent clients


def small_vit(img_size: int, frames: int) -> dict:
    return {"family": "timm_vit", "name": "vit_tiny_patch16_224", "img_size": img_size, "num_frames": frames,
            "kwargs": {"patch_size": 16, "embed_dim": 192, "depth": 6, "num_heads": 3}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(url: str, video: bytes, clients: int, requests_total: int) -> dict:
    import requests

    def one(_):
        with requests.Session() as s:
            start = time.perf_counter()
            r = s.post(f"{url}/predict?top_k=3", data=video, timeout=300)
            r.raise_for_status()
            r.json()
            return time.perf_counter() - start

    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        latencies = list(pool.map(one, range(requests_total)))
        wall = time.perf_counter() - start
    return {"clients": clients, "requests": requests_total, "p50_ms": 1e3 * percentile(latencies, 50),
            "p95_ms": 1e3 * percentile(latencies, 95), "req_per_s": requests_total / wall}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--requests", type=int, default=40, help="requests per model and concurrency level")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs per replica")
    p.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads per replica")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--out", default="")
    args = p.parse_args()

    from components.data.synth import write_mp4
    from pipelines.infer.export import run_export
    from pipelines.infer.serve import start_serving, stop_serving

    work = Path(tempfile.mkdtemp(prefix="serve-latency-"))
    lora = {"type": "lora", "sites": ["attn", "mlp"], "rank": args.rank, "alpha": 2 * args.rank}
    run = write_run(work, small_vit(args.img_size, args.frames), [lora])
    run_export(str(run), str(work / "merged"), mlflow_model=False, merge=True)
    onnx = run_export(str(run), str(work / "onnx"), mlflow_model=False, onnx=True)["onnx"]
    clip = work / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 256, (2 * args.frames, args.img_size, args.img_size, 3), np.uint8)
    write_mp4(clip, frames, fps=8)
    video = clip.read_bytes()
    models = {"unmerged": str(run), "merged": str(work / "merged" / "model.safetensors"), "onnx": onnx["file"]}

    results: dict[str, dict] = {}
    for name, source in models.items():
        url = start_serving(source, port=free_port(), cpus=args.cpus, max_batch=args.max_batch, top_k=3,
                            threads=args.threads)
        try:
            measure(url, video, 1, args.warmup)
            results[name] = {str(c): measure(url, video, c, args.requests) for c in LEVELS}
        finally:
            stop_serving()

    ratios = {}
    for a, b in (("merged", "unmerged"), ("onnx", "unmerged"), ("onnx", "merged")):
        for c in map(str, LEVELS):
            ratios[f"{a}/{b}@{c}"] = {
                "p50_latency": results[a][c]["p50_ms"] / results[b][c]["p50_ms"],
                "req_per_s": results[a][c]["req_per_s"] / results[b][c]["req_per_s"]}
    data = {"benchmark": "serve_latency", "machine": machine("cpu"),
            "settings": {**vars(args), "model": "vit_tiny depth 6, embed 192, patch 16, random init",
                         "lora": lora, "onnx_max_abs_diff": onnx["max_abs_diff"]},
            "results": results, "ratios": ratios}
    path = write_result("serve_latency", data, Path(args.out) if args.out else None)

    print(f"\nserve latency ({args.frames} frames of {args.img_size}px, 1 replica x {args.cpus:g} CPU, "
          f"{args.requests} requests per level)")
    print(f"{'model':<10} {'clients':>7} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7}")
    for name, levels in results.items():
        for c, r in levels.items():
            print(f"{name:<10} {c:>7} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['req_per_s']:7.2f}")
    print("ratios (p50 latency, req/s):")
    for key, r in ratios.items():
        print(f"  {key:<22} {r['p50_latency']:.3f}  {r['req_per_s']:.3f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
