"""`vidpeft zeroshot-splits`: zero-shot top-1 as mean ± std over several official splits (UCF101: 3)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("zeroshot-splits", help="zero-shot over every official split (UCF101: 3), mean and std")
    p.add_argument("--checkpoint", help="a training run directory (its config and adapters are used)")
    p.add_argument("--manifest", action="append", required=True, metavar="FILE",
                   help="one manifest per split (repeat; e.g. vidpeft prepare ucf101 ... --set fold=K)")
    p.add_argument("--classes", default="", help="class names file (default: each manifest's class names)")
    p.add_argument("--split", default="test", help="manifest split holding each official test list")
    p.add_argument("--template", action="append", dest="templates", metavar="TEXT",
                   help="prompt template with one {} (repeatable); default: the config's eval templates")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="experiment YAML(s), e.g. the zeroshot_frozen preset when there is no --checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    p.add_argument("--output", help="summary JSON (default RUN_DIR/zeroshot_splits.json)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from components.config import ConfigError
    from pipelines.infer.zeroshot_splits import run_splits

    if not args.checkpoint and not args.config:
        raise ConfigError("give --checkpoint RUN_DIR or --config FILE (e.g. the zeroshot_frozen preset)")
    run_splits(args.checkpoint, args.manifest, args.classes, args.config, args.overrides, args.split,
               args.templates, args.output)
    return 0
