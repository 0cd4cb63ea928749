"""The command line: ``vidpeft VERB``; each verb is a module of this package (see main.py)."""

from pipelines.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
