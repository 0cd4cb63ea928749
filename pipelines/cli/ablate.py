"""`vidpeft ablate`: run a campaign grid (datasets x variants x seeds) as Tune trials; see pipelines/search/campaign.py."""

from __future__ import annotations


def cmd_ablate(args) -> int:
    from pipelines.search.campaign import run_campaign
    from pipelines.shipped import find

    return run_campaign(str(find("campaign", args.campaign)), args.overrides, out=args.out, max_concurrent=args.max_concurrent)


def add_parser(sub) -> None:
    p = sub.add_parser("ablate", help="run an ablation campaign (datasets x variants x seeds) and tabulate it")
    from pipelines.cli.args import add_verbosity_args

    add_verbosity_args(p)
    p.add_argument("--campaign", required=True, metavar="FILE|NAME",
                   help="campaign YAML: a path or a shipped name, e.g. cm3t_table5 (`vidpeft list campaigns`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config key in every cell (repeatable; part of each cell's identity)")
    p.add_argument("--out", default="", metavar="DIR", help="campaign folder (default runs/campaign-<name>)")
    p.add_argument("--max-concurrent", type=int, default=0, metavar="K",
                   help="cells at once (default: the campaign's max_concurrent; lowered to what the cluster holds)")
    p.set_defaults(fn=cmd_ablate)
