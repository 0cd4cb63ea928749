"""`vidpeft predict`: top-k predictions of a trained model on video files, folders and manifests."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="run a trained model (run dir or export) on videos; writes a Parquet table")
    from pipelines.cli.args import add_verbosity_args

    add_verbosity_args(p)
    p.add_argument("model", metavar="RUN_DIR", help="a training run directory or a `vidpeft export` .safetensors file")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, folders (searched recursively for videos) and .parquet manifests")
    p.add_argument("--out", default="preds.parquet", help="Parquet file to write (default preds.parquet)")
    p.add_argument("--top-k", type=int, help="classes per row (default 5, or every class when the model has fewer)")
    p.add_argument("--window-sec", type=float,
                   help="one row per window of this many seconds (default: one row per video)")
    p.add_argument("--stride-sec", type=float, help="step between windows (default: --window-sec)")
    p.add_argument("--workers", type=int, default=1, help="model actors (a GPU each when the cluster has GPUs)")
    p.add_argument("--classes", metavar="FILE",
                   help="M2-CLIP runs: predict over these class names (one per line) instead of the trained ones")
    p.add_argument("--backbone-checkpoint", metavar="PATH",
                   help="the frozen backbone's weights, when the run's model.backbone.checkpoint moved")
    p.add_argument("--split", help="manifest inputs: only this split (default: every row)")
    p.add_argument("--batch-size", type=int, default=0, help="clips per model call (default data.eval_batch_size)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pipelines.infer.predict import run_predict

    run_predict(args.model, args.inputs, args.out, args.top_k, args.window_sec, args.stride_sec, args.workers,
                args.classes, args.backbone_checkpoint, args.split, args.batch_size)
    return 0
