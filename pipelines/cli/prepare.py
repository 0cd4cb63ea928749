"""`vidpeft prepare FORMAT`: native dataset annotations -> a validated clip manifest.

Format options are `--set key=value` (listed by `vidpeft prepare FORMAT --list-options`);
annotation files whose names do not tell their split are passed as SPLIT=PATH. Side features
are joined before the manifest is written: `--feature audio=feats.parquet` (one vector per clip
id), `--feature audio=audio_path` (`csv`: a column naming each row's .npy file, when no such file or
folder exists) or `--feature-time audio=dir/` (per-second sequences per video, averaged over each
clip). A failing step leaves no manifest behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.config import ConfigError, apply_override
from pipelines.cli.args import add_overwrite_arg


def _sources(args):
    from components.data.features import FeatureSource

    out = []
    for spec, timed in [(s, False) for s in args.feature] + [(s, True) for s in args.feature_time]:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--feature{'-time' if timed else ''} {spec!r}: expected NAME=PATH")
        column = "" if os.path.exists(path) else path  # not a file or folder: an annotation column
        out.append(FeatureSource(name=name, path=path, path_column=column, time_aligned=timed, rate=args.feature_rate,
                                 id_column=args.feature_id_column, value_column=args.feature_value_column,
                                 time_column=args.feature_time_column, tokens=args.feature_tokens))
    return out


def run(args) -> int:
    from components.config import explain
    from components.data.converters import convert, formats, get_format

    if args.format == "list":
        for name in formats():
            print(f"{name:<24} {get_format(name).summary}")
        return 0
    fmt = get_format(args.format)
    if args.list_options:
        for key, default, text in explain(fmt.options_cls):
            print(f"{key:<20} {default:<28} {text}")
        return 0
    if not args.annotations or not args.videos or not args.out:
        raise ConfigError("prepare: --annotations, --videos and --out are required")
    from pipelines.cli.args import guard_output

    inputs = [("--annotations", a.partition("=")[2] if "=" in a and not Path(a).exists() else a)
              for a in args.annotations]
    inputs += [("--videos", args.videos)] + [(f"--feature{'-time' if t else ''}", s.partition("=")[2])
                                             for t, specs in ((False, args.feature), (True, args.feature_time))
                                             for s in specs]
    guard_output(args.out, "--out", inputs, args.overwrite)
    if str(args.out).endswith(("/", os.sep)) or Path(args.out).suffix.lower() != ".parquet":
        raise ConfigError(f"--out {args.out}: a manifest is one Parquet file; give a path ending in .parquet")
    options: dict = {}
    for ov in args.overrides:
        apply_override(options, ov)
    report = convert(args.format, args.annotations, args.videos, args.out, missing=args.missing,
                     options=options, dataset=args.dataset or None, relative_paths=args.relative_paths,
                     features=_sources(args))
    print(f"manifest: {report.manifest} ({report.rows} clips, {report.num_classes} classes, "
          f"splits {report.splits})")
    if report.no_class:
        print(f"{report.no_class} clip(s) have none of the classes (an empty multi-label cell): each is a negative "
              "for every class")
    if report.skipped:
        print(f"skipped {len(report.skipped)} row(s), listed in {report.skip_list}; the first: "
              f"{report.skipped[0]['file']}, {report.skipped[0]['where']}: {report.skipped[0]['reason']}")
    for s in report.features:
        print(f"{s.column}: dim {s.dim}, {s.present} clips with it, {s.missing} without"
              + (f" ({s.invalid} non-finite)" if s.invalid else ""))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="convert dataset annotations to a manifest", description=__doc__)
    p.add_argument("format", help="annotation format (`vidpeft prepare list` shows them)")
    p.add_argument("--annotations", nargs="+", default=[], metavar="[SPLIT=]PATH",
                   help="annotation files or folders of the format")
    p.add_argument("--videos", default="", help="folder holding the videos: a local folder, a bucket prefix "
                   "(s3://bucket/k400/) or a packed manifest (`vidpeft pack`), whose videos are found by file name")
    p.add_argument("--out", default="", help="manifest to write (.parquet)")
    add_overwrite_arg(p, "--out")
    p.add_argument("--missing", choices=("error", "skip"), default="error",
                   help="a row whose video is missing stops the conversion (error) or is left out and "
                        "listed in OUT.skipped.csv (skip)")
    p.add_argument("--dataset", default="", help="dataset name in the manifest (default: the format's)")
    p.add_argument("--relative-paths", action="store_true",
                   help="store video paths relative to the manifest's folder (movable together)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="a format option, e.g. --set label=action")
    p.add_argument("--list-options", action="store_true", help="list the format's options and exit")
    p.add_argument("--feature", action="append", default=[], metavar="NAME=PATH|COLUMN",
                   help="per-clip side feature (Parquet or folder of <clip_id>.npy, or for csv an annotation "
                        "column naming each row's .npy file) -> column feat_NAME")
    p.add_argument("--feature-time", action="append", default=[], metavar="NAME=PATH",
                   help="per-video feature sequence (Parquet with a time column, or folder of "
                        "<video stem>.npy), averaged over each clip's time range")
    p.add_argument("--feature-rate", type=float, default=1.0, help=".npy sequences: rows per second")
    p.add_argument("--feature-tokens", type=int, default=1, metavar="M",
                   help="keep M tokens per clip instead of one mean vector: --feature-time sequences are "
                        "averaged over M equal bins of the clip's time range, (N, D) .npy files over M "
                        "row bins (cross-attention adapters attend over the M tokens)")
    p.add_argument("--feature-id-column", default="id", help="Parquet features: key column")
    p.add_argument("--feature-value-column", default="feature", help="Parquet features: vector column")
    p.add_argument("--feature-time-column", default="time", help="Parquet sequences: time column (s)")
    p.set_defaults(fn=run)
