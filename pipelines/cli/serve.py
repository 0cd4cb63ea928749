"""`vidpeft serve`: an online HTTP endpoint for a trained model on Ray Serve."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a trained model (run dir, export .safetensors or .onnx) over HTTP "
                                     "on Ray Serve: a video in, top-k labels out")
    from pipelines.cli.args import add_verbosity_args

    add_verbosity_args(p)
    p.add_argument("model", metavar="RUN_DIR|EXPORT",
                   help="a training run directory, a `vidpeft export` .safetensors file or its model.onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--replicas", type=int, default=1, help="model replicas (default 1)")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs per replica (default 1)")
    p.add_argument("--gpus", type=float, default=0.0, help="GPUs per replica (default 0; fractions share a GPU)")
    p.add_argument("--max-batch", type=int, default=8, help="requests batched into one model call (default 8)")
    p.add_argument("--batch-wait-s", type=float, default=0.01,
                   help="longest wait for a batch to fill, in seconds (default 0.01)")
    p.add_argument("--top-k", type=int, default=5, help="default classes per answer (a request may ask for others)")
    p.add_argument("--threads", type=int, default=0, help="torch/onnxruntime threads per replica (default: theirs)")
    p.add_argument("--backbone-checkpoint", metavar="PATH",
                   help="the frozen backbone's weights, when the run's model.backbone.checkpoint moved")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pipelines.infer.serve import run_serve

    return run_serve(args.model, host=args.host, port=args.port, replicas=args.replicas, cpus=args.cpus,
                     gpus=args.gpus, max_batch=args.max_batch, batch_wait_s=args.batch_wait_s, top_k=args.top_k,
                     backbone_checkpoint=args.backbone_checkpoint, threads=args.threads)
