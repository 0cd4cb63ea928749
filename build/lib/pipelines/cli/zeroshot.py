"""`vidpeft zeroshot`: zero-shot recognition over any class names (M2-CLIP)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("zeroshot", help="classify clips among unseen class names with a CLIP text tower")
    p.add_argument("--checkpoint", help="a training run directory (its config and adapters are used)")
    p.add_argument("--classes", required=True, help="text file, one class name per line (manifest label order)")
    p.add_argument("--manifest", required=True, help="clips to classify (labels index the classes file)")
    p.add_argument("--split", default="test", help="manifest split to evaluate")
    p.add_argument("--template", action="append", dest="templates", metavar="TEXT",
                   help='prompt template with one {} (repeatable; averaged); default: the config\'s eval templates')
    p.add_argument("--clips", type=int, metavar="N",
                   help="temporal clips per video, scores averaged over clips x crops (default: data.eval_clips)")
    p.add_argument("--crops", type=int, metavar="N",
                   help="spatial crops per clip from a decode at img_size * data.decode_scale "
                        "(default: data.eval_crops)")
    p.add_argument("--output", help="where to write the metrics JSON (default RUN_DIR/zeroshot.json)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="experiment YAML(s), e.g. a frozen-CLIP preset when there is no --checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    from pipelines.cli.args import add_verbosity_args

    add_verbosity_args(p)
    p.set_defaults(fn=run)


def run(args) -> int:
    from pipelines.infer.zeroshot import run_zeroshot

    if not args.checkpoint and not args.config:
        from components.config import ConfigError

        raise ConfigError("give --checkpoint RUN_DIR or --config FILE (e.g. the zeroshot_frozen preset)")
    run_zeroshot(args.checkpoint, args.classes, args.manifest, args.config, args.overrides, args.split,
                 args.templates, args.output, args.clips, args.crops)
    return 0
