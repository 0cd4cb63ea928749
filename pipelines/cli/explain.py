"""`vidpeft explain`: every config key with its default and help text; with --preset, a preset's
values and where each comes from (pipelines/presets.py)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="list every config key with its default and help; --preset: a preset's "
                                       "recipe with each value's source")
    p.add_argument("--preset", default="", help="a preset name (e.g. cm3t/mhva_pt, under pipelines/configs/presets) "
                                                "or a preset file: print each value it sets and where it comes from")
    p.set_defaults(fn=run)


def run(args) -> int:
    if getattr(args, "preset", ""):
        from pipelines.presets import print_recipe

        return print_recipe(args.preset)
    from components.config import explain
    from pipelines.config import ExperimentConfig

    for key, default, text in explain(ExperimentConfig):
        print(f"{key:<36} {default:<24} {text}")
    return 0
