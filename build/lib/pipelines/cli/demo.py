"""`vidpeft demo`: the staged demo on generated data (pretrain, adapt frozen, report)."""

from __future__ import annotations

from pipelines.cli.args import add_verbosity_args


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the staged demo: pretrain a tiny backbone, adapt it frozen, report (--recipe cm3t|m2clip)")
    p.add_argument("--workdir", default=".", help="where demo_data/, runs/ and mlflow.db go")
    p.add_argument("--recipe", default="cm3t", choices=["cm3t", "m2clip"],
                   help="cm3t: a ViT pretrained on a source set, adapted frozen (MHVA+PT, CAA); m2clip: a tiny CLIP "
                        "pretrained on captioned clips, TED + text adapters, zero-shot on held-out compositions")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    add_verbosity_args(p)
    p.set_defaults(fn=run)


def run(args) -> int:
    if args.recipe == "m2clip":
        from pipelines.demo.m2clip import run_m2clip_demo

        run_m2clip_demo(args.workdir, args.overrides)
        return 0
    from pipelines.demo.cm3t import run_demo

    run_demo(args.workdir, args.overrides)
    return 0
