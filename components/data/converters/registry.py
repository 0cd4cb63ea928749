"""Converter registry: a format = an options dataclass + a parse function + one `register` line."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.config import ConfigError, from_dict
from components.data.converters.base import (AnnotationFile, ConvertReport, Converted,
                                             VideoFinder, build_manifest)
from components.data.features import FeatureSource

ParseFn = Callable[[list[AnnotationFile], Any, VideoFinder], Converted]


@dataclass(frozen=True)
class Format:
    name: str
    options_cls: type
    parse: ParseFn
    summary: str


_REGISTRY: dict[str, Format] = {}


def register_format(name: str, options_cls: type, parse: ParseFn, summary: str) -> None:
    if name in _REGISTRY and _REGISTRY[name].parse is not parse:
        raise ValueError(f"annotation format {name!r} is already registered")
    _REGISTRY[name] = Format(name, options_cls, parse, summary)


def get_format(name: str) -> Format:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown annotation format {name!r}; known: {', '.join(formats())}")
    return _REGISTRY[name]


def formats() -> list[str]:
    return sorted(_REGISTRY)


def convert(fmt: str, annotations: Sequence[str | os.PathLike | AnnotationFile],
            videos: str | os.PathLike, out: str | os.PathLike, missing: str = "error",
            options: Mapping[str, Any] | None = None, dataset: str | None = None,
            relative_paths: bool = False, features: Sequence[FeatureSource] = ()) -> ConvertReport:
    """Native annotations -> a validated manifest at `out`, with `features` joined.

    `annotations` are paths, optionally `SPLIT=PATH` to name the split of a file whose name
    does not; `options` are the format's options (unknown keys raise, naming the key). A feature
    source with a `path_column` is read from that annotation column (formats with `feature_columns`).
    A failure leaves no file at `out`.
    """
    f = get_format(fmt)
    opts = from_dict(f.options_cls, dict(options or {}), prefix=fmt)
    columns = [s.path_column for s in features if s.path_column]
    if columns:
        if not hasattr(opts, "feature_columns"):
            raise ConfigError(f"{fmt}: annotations of this format carry no feature column "
                              f"({', '.join(columns)}); give a Parquet file or a folder of .npy files")
        opts.feature_columns = list(dict.fromkeys([*opts.feature_columns, *columns]))
    files = [a if isinstance(a, AnnotationFile) else AnnotationFile.parse(a) for a in annotations]
    if not files:
        raise ConfigError(f"{fmt}: no annotation files given")
    finder = VideoFinder(videos)
    return build_manifest(f.parse(files, opts, finder), finder, out, missing=missing,
                          relative_paths=relative_paths, dataset=dataset, features=features)
