"""`vidpeft zeroshot`: zero-shot recognition over any class names (M2-CLIP)."""

from __future__ import annotations

from pathlib import Path


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
    p.add_argument("--config", "--preset", action="append", default=[], metavar="FILE|NAME",
                   help="experiment YAML(s), a path or a shipped name, e.g. m2clip/zeroshot_frozen when there is "
                        "no --checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    from pipelines.cli.args import add_overwrite_arg, add_verbosity_args

    add_overwrite_arg(p, "an --output file given (an earlier zero-shot result is replaced anyway)")
    add_verbosity_args(p)
    p.set_defaults(fn=run)


def earlier_result(path: str) -> bool:
    """``path`` holds an earlier zero-shot result (its JSON), which a new run of the command may replace."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"adapters_loaded", "clips", "views"} <= set(data)


def run(args) -> int:
    from components.config import ConfigError
    from pipelines.cli.args import config_files, guard_output, require_folder
    from pipelines.infer.trained import check_split
    from pipelines.infer.zeroshot import run_zeroshot

    if not args.checkpoint and not args.config:
        raise ConfigError("give --checkpoint RUN_DIR or --config FILE (e.g. the zeroshot_frozen preset)")
    split = check_split(args.split)
    if args.output:  # checked before the model and the clips are loaded: the JSON is written at the end
        guard_output(args.output, "--output", [("--manifest", args.manifest), ("--classes", args.classes)],
                     args.overwrite or earlier_result(args.output))
        require_folder(args.output, "--output")
    run_zeroshot(args.checkpoint, args.classes, args.manifest, config_files(args.config), args.overrides, split,
                 args.templates, args.output, args.clips, args.crops)
    return 0
