"""`vidpeft serve`: a trained model (run dir, .safetensors export or .onnx export) behind HTTP on Ray Serve.

The model is checked on the driver first (one-line errors, before Ray starts), then Ray Serve runs
``replicas`` copies of ``pipelines.infer.serve_app.VideoService`` with ``cpus``/``gpus`` each, its HTTP proxy
on ``host:port`` (127.0.0.1 by default: loopback only). ``blocking``: serve until Ctrl-C, then shut
Serve down; otherwise return once the application is up (tests, benchmarks), the caller stops it
with ``stop_serving()``.
"""

from __future__ import annotations

import time

from components.config import ConfigError

APP_NAME = "vidpeft"


def check_source(source: str, backbone_checkpoint: str | None = None):
    """The model's description, or a one-line error, without Ray."""
    from pipelines.infer.onnx_scorer import is_onnx, onnx_trained
    from pipelines.infer.trained import load_trained

    return onnx_trained(source) if is_onnx(source) else load_trained(source, backbone_checkpoint)


def start_serving(source: str, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, cpus: float = 1.0,
                  gpus: float = 0.0, max_batch: int = 8, batch_wait_s: float = 0.01, top_k: int = 5,
                  backbone_checkpoint: str | None = None, threads: int = 0) -> str:
    """Deploy the service and return its base URL once it answers."""
    if replicas < 1 or cpus <= 0 or gpus < 0 or max_batch < 1 or batch_wait_s < 0 or top_k < 1:
        raise ConfigError("--replicas, --max-batch and --top-k must be >= 1, --cpus > 0, --gpus and --batch-wait-s >= 0")
    trained = check_source(source, backbone_checkpoint)
    from ray import serve

    from pipelines.runtime.ray_env import ensure_ray
    from pipelines.infer.serve_app import VideoService

    ensure_ray()
    serve.start(http_options={"host": host, "port": port})
    deployment = serve.deployment(VideoService, name="VideoService", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": cpus, "num_gpus": gpus},
                                  max_ongoing_requests=max(2 * max_batch, 8))
    app = deployment.bind(str(source), backbone_checkpoint, top_k, max_batch, batch_wait_s, threads)
    serve.run(app, name=APP_NAME, route_prefix="/")
    url = f"http://{host}:{port}"
    names = trained.output_names
    print(f"[vidpeft] serving {source} at {url} ({replicas} replica(s), {cpus:g} CPU / {gpus:g} GPU each, "
          f"batches of up to {max_batch} requests; {len(names)} classes)", flush=True)
    print(f"  curl --data-binary @clip.mp4 '{url}/predict?top_k=5'   (or JSON {{\"uri\": ...}}; GET {url}/health)",
          flush=True)
    return url


def stop_serving() -> None:
    from ray import serve

    serve.shutdown()


def run_serve(source: str, **options) -> int:
    start_serving(source, **options)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("[vidpeft] stopping the service", flush=True)
    finally:
        stop_serving()
    return 0
