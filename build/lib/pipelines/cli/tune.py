"""`vidpeft tune`: a hyperparameter search (Ray Tune) over a search-space YAML; see pipelines/search/tune.py."""

from __future__ import annotations


def cmd_tune(args) -> int:
    from pipelines.cli.args import config_files
    from pipelines.search.tune import run_search
    from pipelines.shipped import find

    summary = run_search(config_files(args.config), args.overrides, str(find("space", args.space)), args.trials, scheduler=args.scheduler,
                         search=args.search, max_concurrent=args.max_concurrent, out=args.out, resume=args.resume,
                         grace_period=args.grace_period, reduction_factor=args.reduction_factor)
    return 1 if summary.get("interrupted") else 0


def add_parser(sub) -> None:
    from pipelines.cli.args import add_config_args

    p = sub.add_parser("tune", help="search hyperparameters: each trial is a full training run (Ray Tune)")
    add_config_args(p)
    p.add_argument("--space", required=True, metavar="FILE|NAME",
                   help="search space YAML: a path or a shipped name, e.g. demo_adapters (`vidpeft list spaces`)")
    p.add_argument("--trials", type=int, default=8, metavar="N",
                   help="samples drawn from the space (with grid entries: N runs of the whole grid)")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default="asha",
                   help="asha stops weak trials early (time = epochs); fifo runs every trial to the end")
    p.add_argument("--search", choices=["random", "optuna"], default="random", help="how samples are drawn")
    p.add_argument("--max-concurrent", type=int, default=1, metavar="K",
                   help="trials at once (lowered to what the cluster's CPUs hold whole)")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs every trial gets before it can be stopped")
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA: keep the best 1/rf at each rung")
    p.add_argument("--out", default="", metavar="DIR", help="search folder (default runs/tune-<space name>)")
    p.add_argument("--resume", action="store_true",
                   help="require an earlier search in --out to continue (one is resumed anyway when found)")
    p.set_defaults(fn=cmd_tune)
