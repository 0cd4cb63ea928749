"""`vidpeft explain`: every config key with its default and help text."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="list every config key with its default and help")
    p.set_defaults(fn=run)


def run(args) -> int:
    from components.config import explain
    from pipelines.config import ExperimentConfig

    for key, default, text in explain(ExperimentConfig):
        print(f"{key:<36} {default:<24} {text}")
    return 0
