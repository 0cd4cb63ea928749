"""The `vidpeft` command line: one sub-command per pipeline stage."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from components.config import ConfigError
from components.data.manifest import ManifestError
from pipelines import commands
from pipelines.ray_env import LOG_LEVEL_ENV, verbose
from pipelines.phase_log import mark


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="experiment YAML (repeatable; later files override earlier ones)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key, e.g. --set optim.lr=3e-4 (repeatable; wins over files)")
    add_verbosity_args(p)


def add_verbosity_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quiet", "-q", action="store_const", const="quiet", dest="log_level",
                   help="errors and the final results only (same as --log-level quiet)")
    g.add_argument("--verbose", "-v", action="store_const", const="verbose", dest="log_level",
                   help="also Ray's start-up and Ray Data's per-dataset messages (--log-level verbose)")
    g.add_argument("--log-level", choices=("quiet", "info", "verbose"), dest="log_level",
                   help="console output: quiet, info (default: progress and epoch lines) or verbose")


def load_experiment(files: list[str], overrides: list[str]):
    from components.config import resolve
    from pipelines.config import ExperimentConfig

    return resolve(ExperimentConfig, files, overrides)


def cmd_train(args) -> int:
    from pipelines.train import run_train
    mark("train_imported")

    run_train(load_experiment(args.config, args.overrides), resume=args.resume)
    return 0


def cmd_synth(args) -> int:
    from components.data.synth import make_synthetic_dataset

    path = make_synthetic_dataset(args.out_dir, num_classes=args.classes, clips_per_class=args.clips_per_class,
                                  frames=args.frames, size=args.size, seed=args.seed, feature_dim=args.feature_dim,
                                  corrupt=args.corrupt, task=args.task)
    print(f"manifest: {path}")
    return 0


def cmd_demo(args) -> int:
    if args.recipe == "m2clip":
        from pipelines.demo_m2clip import run_m2clip_demo

        run_m2clip_demo(args.workdir, args.overrides)
        return 0
    from pipelines.demo import run_demo

    run_demo(args.workdir, args.overrides)
    return 0


def cmd_explain(args) -> int:
    from components.config import explain
    from pipelines.config import ExperimentConfig

    for key, default, text in explain(ExperimentConfig):
        print(f"{key:<36} {default:<24} {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidpeft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train adapters on a manifest with Ray Train")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the output dir's last checkpoint")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("synth", help="write a synthetic motion-classified video dataset + manifest")
    p.add_argument("out_dir")
    p.add_argument("--task", default="motion", choices=["motion", "appearance", "motion_texture", "compositions"],
                   help="scene and label: motion (shapes moving over texture, class = direction), appearance "
                        "(static white shape on black, class = shape x size), motion_texture (coloured shapes "
                        "crossing a texture, class = direction), compositions (one shape crossing a texture, "
                        "class = colour x shape x direction in words, e.g. 'red disc moving left': 32 classes)")
    p.add_argument("--classes", type=int, default=4, help="number of classes (directions); appearance has 4, compositions 32")
    p.add_argument("--clips-per-class", type=int, default=12)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-dim", type=int, default=8, help="width of the side 'audio' feature (0 = none)")
    p.add_argument("--corrupt", type=int, default=0, help="also list N broken video files in the train split")
    p.set_defaults(fn=cmd_synth)

    p = sub.add_parser("demo", help="the staged demo: pretrain a tiny backbone, adapt it frozen, report (--recipe cm3t|m2clip)")
    p.add_argument("--workdir", default=".", help="where demo_data/, runs/ and mlflow.db go")
    p.add_argument("--recipe", default="cm3t", choices=["cm3t", "m2clip"],
                   help="cm3t: a ViT pretrained on a source set, adapted frozen (MHVA+PT, CAA); m2clip: a tiny CLIP "
                        "pretrained on captioned clips, TED + text adapters, zero-shot on held-out compositions")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    add_verbosity_args(p)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("explain", help="list every config key with its default and help")
    p.set_defaults(fn=cmd_explain)

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    mark("cli_start")
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", None)
    if level:  # one switch for the driver (Ray, Ray Data) and, through the config, the workers
        os.environ[LOG_LEVEL_ENV] = level
        if isinstance(getattr(args, "overrides", None), list):
            args.overrides.append(f"log.level={level}")
    if not verbose():  # MLflow's "Creating initial database tables" etc.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        return args.fn(args)
    except (ConfigError, ManifestError, OSError) as e:  # bad input: one line naming it, exit code 2
        if os.environ.get("VIDPEFT_DEBUG"):
            raise
        print(f"vidpeft: error: {one_line(e)}", file=sys.stderr)
        return 2


def one_line(e: BaseException) -> str:
    """The message on one line (YAML and multi-key errors span several), credentials in URLs masked."""
    from pipelines.redaction import redact_urls

    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return redact_urls(text)


if __name__ == "__main__":
    sys.exit(main())
