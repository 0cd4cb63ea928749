"""The `vidpeft` command line: one module per verb in this package, each with ``add_parser(sub)``.

A new verb is one file here, with no edit to this one: every module but ``main`` and ``args`` is a verb.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from components.config import ConfigError
from components.data.manifest import ManifestError
from pipelines.cli.args import one_line
from pipelines.runtime.phase_log import mark
from pipelines.runtime.ray_env import LOG_LEVEL_ENV, verbose

_NOT_VERBS = {"main", "args", "__main__"}
# The core verbs first in --help, the rest alphabetically.
_FIRST = ("train", "synth", "demo", "explain")


def build_parser() -> argparse.ArgumentParser:
    import pipelines.cli as package

    parser = argparse.ArgumentParser(prog="vidpeft", description="vidpeft: parameter-efficient transfer of frozen "
                                     "video and image-text transformers, on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in _NOT_VERBS)
    for name in sorted(names, key=lambda n: (_FIRST.index(n) if n in _FIRST else len(_FIRST), n)):
        importlib.import_module(f"{package.__name__}.{name}").add_parser(sub)
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
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # also when MLflow was imported before main
    if args.command not in ("ray",):  # a warm local Ray (`vidpeft ray up`) is joined with its token
        from pipelines.runtime.warm_ray import attach_env

        attach_env()
    try:
        code = args.fn(args)
    except (ConfigError, ManifestError, OSError) as e:  # bad input: one line naming it, exit code 2
        if os.environ.get("VIDPEFT_DEBUG"):
            raise
        print(f"vidpeft: error: {one_line(e)}", file=sys.stderr)
        code = 2
    mark("cli_done")  # what remains is the process's exit (Ray's shutdown, the interpreter's)
    if argv is None:  # the console command: no interpreter teardown (pipelines/runtime/fast_exit.py)
        from pipelines.runtime.fast_exit import fast_exit

        fast_exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
