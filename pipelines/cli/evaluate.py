"""`vidpeft evaluate`: a trained model's metrics on any manifest split, logged to its MLflow run."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run (or an export) on a manifest split; writes eval_<split>.json")
    from pipelines.cli.args import add_verbosity_args

    add_verbosity_args(p)
    p.add_argument("model", metavar="RUN_DIR", help="a training run directory or a `vidpeft export` .safetensors file")
    p.add_argument("--manifest", help="clips to evaluate (default: the run's data.manifest)")
    p.add_argument("--split", default="test", help="manifest split (default test)")
    p.add_argument("--views", metavar="CxS", help="the papers' test protocol: C temporal clips x S spatial crops per "
                                                "video, e.g. 4x3 (instead of --clips/--crops)")
    p.add_argument("--clips", type=int, metavar="N", help="temporal clips per video (default: the run's data.eval_clips)")
    p.add_argument("--crops", type=int, metavar="N", help="spatial crops per clip (default: the run's data.eval_crops)")
    p.add_argument("--backbone-checkpoint", metavar="PATH",
                   help="the frozen backbone's weights, when the run's model.backbone.checkpoint moved")
    p.add_argument("--out", metavar="DIR", help="where eval_<split>.json and the confusion matrix go (default RUN_DIR)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--max-views", type=int, metavar="N", help="at most N views through the model at once, the rest "
                                                             "in chunks (default: the run's data.eval_max_views)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="evaluation workers, each a shard of the split with its own decoders (default 1)")
    p.add_argument("--save-scores", metavar="FILE",
                   help="write per-video scores (Parquet: clip_id, label, scores, pred) for ensembling")
    p.set_defaults(fn=run)


def run(args) -> int:
    from components.config import ConfigError
    from pipelines.data.eval_views import parse_views
    from pipelines.infer.evaluate import run_evaluate

    clips, crops = args.clips, args.crops
    if args.views:
        if clips is not None or crops is not None:
            raise ConfigError("--views CxS replaces --clips and --crops: give one or the other")
        clips, crops = parse_views(args.views)
    run_evaluate(args.model, args.manifest, args.split, clips, crops, args.backbone_checkpoint, args.out,
                 log=not args.no_mlflow, workers=args.workers, save_scores=args.save_scores,
                 max_views=args.max_views)
    return 0
