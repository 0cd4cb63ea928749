"""Argument helpers every verb shares: config layering, verbosity, one-line errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


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
    if isinstance(e, OSError):  # a message that names its path already is not given another frame's
        where = e.filename or (None if os.sep in text or "://" in text else _path_of(e))
        if where and str(where) not in text:
            text = f"{where}: {text}"
    return redact_urls(text)


# Names a library gives the path it was working on when it raises an OSError without a filename
# (e.g. a copy or a rename made through a thread, or a C extension's errno).
_PATH_NAMES = ("path", "filename", "file", "dst", "src", "dest", "target", "out", "name", "local_path", "local_dir")


def _path_of(e: BaseException) -> str | None:
    """The path an OSError without a filename was about: the innermost frame's path-like local, or else the
    place it was raised (module:function), so the line always says where to look."""
    tb, frames = e.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name in _PATH_NAMES:
            value = frame.f_locals.get(name)
            if isinstance(value, os.PathLike) or (isinstance(value, str) and os.sep in value):
                return str(os.fspath(value))
    if frames:
        code = frames[-1].f_code
        return f"(raised in {Path(code.co_filename).name}:{code.co_name})"
    return None


# ---- nothing a user has is replaced without asking -------------------------------------------------------------
# An output that is one of the same command's inputs is always refused (the input would be read while it is
# replaced); an output that already exists is refused unless the user passed --overwrite.
OVERWRITE = "--overwrite"


def add_overwrite_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(OVERWRITE, action="store_true", help=f"replace {what} when it already exists (never an input)")


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def require_folder(out, option: str) -> None:
    """One ConfigError when ``out``'s folder does not exist, for a writer that would find out only after its work."""
    from components.config import ConfigError

    if not Path(out).absolute().parent.is_dir():
        raise ConfigError(f"{option} {out}: its folder does not exist; create it or choose another path")


def guard_output(out, option: str, inputs=(), overwrite: bool = False) -> None:
    """One ConfigError naming ``out`` when writing it would lose data. ``option``: how the user named the
    output (e.g. ``--out``); ``inputs``: (option, path) pairs of this command's inputs."""
    from components.config import ConfigError

    path = Path(out)
    for name, src in inputs:
        if src and _same(path, Path(src)):
            raise ConfigError(f"{option} {out}: is this command's input ({name}); write to another file")
    if path.is_dir():
        raise ConfigError(f"{option} {out}: is a directory; give a file path")
    if path.exists() and not overwrite:
        raise ConfigError(f"{option} {out}: already exists; pass {OVERWRITE} to replace it, or choose another path")
