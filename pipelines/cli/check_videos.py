"""`vidpeft check-videos MANIFEST`: find corrupt, truncated, empty, unreadable or missing videos.

Exit code: 0 when every clip is usable, 1 when bad files or clips were found (so a script or CI
step can stop on it; --no-fail always returns 0), 2 for an unusable manifest.
"""

from __future__ import annotations

import sys
from pathlib import Path

from components.config import ConfigError
from pipelines.cli.args import add_overwrite_arg


def earlier_report(path: str) -> bool:
    """``path`` holds what check-videos writes (its JSON report or its CSV's header), so a new check may replace it."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"path,reason,clips,datasets") or (head.lstrip().startswith(b"{") and b'"bad_clips"' in head)


def run(args) -> int:
    from pipelines.data.check_videos import Decoders, check_manifest, write_clean_manifest, write_reports

    def progress(done: int, total: int) -> None:
        print(f"check-videos: {done}/{total} videos", file=sys.stderr, flush=True)

    from pipelines.cli.args import guard_output, require_folder

    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers}: give 0 (one per CPU) or a positive number of processes")
    from components.io import basename, is_remote

    # reports go next to a local manifest; a remote one's into the working directory
    stem = Path(basename(args.manifest)) if is_remote(args.manifest) else Path(args.manifest)
    json_path = args.report or str(stem.with_name(stem.name + ".check.json"))
    csv_path = args.csv or str(stem.with_name(stem.name + ".check.csv"))
    manifest = [("MANIFEST", args.manifest)]
    if args.report and args.csv and Path(args.report).absolute() == Path(args.csv).absolute():
        raise ConfigError(f"--report and --csv are both {args.report}: give each report its own file")
    for option, path, given in (("--report", json_path, args.report), ("--csv", csv_path, args.csv)):
        # reports are rewritten on each check; any other file the user names only with --overwrite
        guard_output(path, option, manifest, overwrite=args.overwrite or not given or earlier_report(path))
        require_folder(path, option)
    if args.clean:
        guard_output(args.clean, "--clean", manifest + [("--report", json_path), ("--csv", csv_path)],
                     args.overwrite)
    report, bad_ids = check_manifest(args.manifest, workers=args.workers, quick=args.quick,
                                     progress=progress if args.progress else None,
                                     decoders=Decoders(args.decoder, args.decoder_fallback))
    write_reports(report, json_path, csv_path)
    for name, d in report.by_dataset.items():
        print(f"{name}: {d['bad_videos']}/{d['videos']} bad videos, {d['bad_clips']}/{d['clips']} bad clips")
    if report.fallback_videos:
        print(f"{report.fallback_videos} video(s) readable by {args.decoder_fallback} only "
              f"(decoded by data.decoder_fallback during training)")
    for b in report.bad[:50]:
        print(f"  {b['path']}: {b['reason']} ({b['clips']} clip(s))")
    if len(report.bad) > 50:
        print(f"  ... {len(report.bad) - 50} more in the report")
    print(f"report: {json_path} and {csv_path}")
    if args.clean:
        n = write_clean_manifest(args.manifest, bad_ids, args.clean)
        print(f"clean manifest: {args.clean} ({n} clips)")
    return 1 if report.bad and not args.no_fail else 0


def add_parser(subparsers) -> None:
    from components.video.decoders import decoder_names

    p = subparsers.add_parser("check-videos", help="scan a manifest's videos in parallel and report bad files",
                              description=__doc__)
    p.add_argument("manifest")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = one per CPU)")
    p.add_argument("--quick", action="store_true",
                   help="only open each file (skip decoding its first/middle/last frame)")
    p.add_argument("--decoder", default="decord", choices=decoder_names(), help="decoder checked (data.decoder)")
    p.add_argument("--decoder-fallback", default="pyav", choices=("", *decoder_names()),
                   help="tried on a file --decoder cannot read (data.decoder_fallback); '' = none")
    p.add_argument("--report", default="", help="JSON report path (default MANIFEST.check.json)")
    p.add_argument("--csv", default="", help="CSV report path (default MANIFEST.check.csv)")
    p.add_argument("--clean", default="", metavar="OUT", help="also write a manifest without the bad clips")
    add_overwrite_arg(p, "the --clean manifest, or a --report / --csv file given")
    p.add_argument("--no-fail", action="store_true", help="exit 0 even when bad files are found")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")
    p.set_defaults(fn=run)
