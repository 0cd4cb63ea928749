"""`vidpeft list`: the configs, presets, search spaces and campaigns that ship with vidpeft, by name."""

from __future__ import annotations

KINDS = {"configs": "config", "spaces": "space", "campaigns": "campaign"}


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="the shipped configs/presets, search spaces and campaigns, by the names "
                                    "--config, --space and --campaign take")
    p.add_argument("what", nargs="?", choices=sorted(KINDS), help="one kind (default: all three)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pipelines.shipped import names

    for label, kind in KINDS.items():
        if args.what in (None, label):
            print(f"{label}: " + " ".join(names(kind)))
    return 0
