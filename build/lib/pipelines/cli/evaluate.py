"""`vidpeft evaluate`: a trained model's metrics on any manifest split, logged to its MLflow run."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run (or an export) on a manifest split; writes eval_<split>.json")
    from pipelines.cli.args import add_verbosity_args

    add_verbosity_args(p)
    p.add_argument("model", metavar="RUN_DIR", help="a training run directory or a `vidpeft export` .safetensors file")
    p.add_argument("--manifest", help="clips to evaluate (default: the run's data.manifest)")
    p.add_argument("--split", default="test", help="manifest split (default test)")
    p.add_argument("--clips", type=int, metavar="N", help="temporal clips per video (default: the run's data.eval_clips)")
    p.add_argument("--crops", type=int, metavar="N", help="spatial crops per clip (default: the run's data.eval_crops)")
    p.add_argument("--backbone-checkpoint", metavar="PATH",
                   help="the frozen backbone's weights, when the run's model.backbone.checkpoint moved")
    p.add_argument("--out", metavar="DIR", help="where eval_<split>.json and the confusion matrix go (default RUN_DIR)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pipelines.infer.evaluate import run_evaluate

    run_evaluate(args.model, args.manifest, args.split, args.clips, args.crops, args.backbone_checkpoint, args.out,
                 log=not args.no_mlflow)
    return 0
