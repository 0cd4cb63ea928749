"""`vidpeft pack MANIFEST --out URI`: a manifest's clips into tar shards (WebDataset layout) and a packed
manifest that points at (shard, member), so an epoch costs one GET per shard instead of one per clip
(components/data/packed.py; docs/cluster_data.md)."""

from __future__ import annotations

import sys


def run(args) -> int:
    from components.config import ConfigError
    from components.data.packed import pack_manifest, parse_size

    try:
        shard_bytes = parse_size(args.shard_size)
    except ValueError as e:
        raise ConfigError(f"--shard-size: {e}") from None

    def progress(done: int, total: int) -> None:
        print(f"pack: {done}/{total} clips", file=sys.stderr, flush=True)

    check_out(args.manifest, args.out, args.overwrite)
    report = pack_manifest(args.manifest, args.out, shard_bytes, progress if args.progress else None)
    print(f"packed {report.clips} clips ({report.videos} videos, {report.bytes / 1e6:.1f} MB) into "
          f"{report.shards} shard(s); manifest: {report.manifest}")
    return 0


def check_out(manifest: str, out: str, overwrite: bool) -> None:
    """The packed manifest (OUT/manifest.parquet) never replaces the input manifest, and an existing one
    only with --overwrite."""
    from components import io as storage
    from components.config import ConfigError
    from pipelines.cli.args import OVERWRITE, guard_output

    target = storage.join(out + "/", "manifest.parquet")
    if not storage.is_remote(target):
        guard_output(target, "--out", [("MANIFEST", manifest)], overwrite)
        return
    if storage.absolute(target) == storage.absolute(manifest):
        raise ConfigError(f"--out {out}: its manifest.parquet is this command's input (MANIFEST); pack elsewhere")
    if not overwrite and storage.exists(target):
        raise ConfigError(f"--out {out}: already holds a manifest.parquet; pass {OVERWRITE} to replace it, "
                          f"or choose another prefix")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("pack", help="pack a manifest's videos and features into tar shards (WebDataset)",
                              description=__doc__)
    p.add_argument("manifest", help="the manifest to pack (a path or an s3:// / gs:// / https:// URI)")
    p.add_argument("--out", required=True, help="folder or bucket prefix for the shards and manifest.parquet")
    p.add_argument("--shard-size", default="512MB", help="bytes per shard, e.g. 512MB, 2GB (default 512MB)")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")
    from pipelines.cli.args import add_overwrite_arg

    add_overwrite_arg(p, "OUT/manifest.parquet")
    p.set_defaults(fn=run)
