"""Argument helpers every verb shares: config layering, verbosity, one-line errors."""

from __future__ import annotations

import argparse


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "--preset", action="append", default=[], metavar="FILE|NAME",
                   help="experiment YAML, a path or a shipped name: demo, demo/target, cm3t/mhva_pt "
                        "(`vidpeft list configs`; repeatable; later files override earlier ones)")
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

    return resolve(ExperimentConfig, config_files(files), overrides)


def config_files(refs: list[str]) -> list[str]:
    """``--config`` values as files: paths, or names of shipped configs (pipelines/shipped.py)."""
    from pipelines.shipped import find

    return [str(find("config", r)) for r in refs]


def one_line(e: BaseException) -> str:
    """The message on one line (YAML and multi-key errors span several), credentials in URLs masked."""
    from pipelines.runtime.redaction import redact_urls

    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return redact_urls(text)
