"""`vidpeft synth`: a synthetic video dataset and its manifest, for demos and tests."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic motion-classified video dataset + manifest")
    p.add_argument("out_dir")
    p.add_argument("--task", default="motion", choices=["motion", "appearance", "motion_texture", "compositions"],
                   help="scene and label: motion (shapes moving over texture, class = direction), appearance "
                        "(static white shape on black, class = shape x size), motion_texture (coloured shapes "
                        "crossing a texture, class = direction), compositions (one shape crossing a texture, "
                        "class = colour x shape x direction in words, e.g. 'red disc moving left': 32 classes)")
    p.add_argument("--classes", type=int, default=4, help="number of classes (directions); appearance has 4, compositions 32")
    p.add_argument("--clips-per-class", type=int, default=12)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-dim", type=int, default=8, help="width of the side 'audio' feature (0 = none)")
    p.add_argument("--corrupt", type=int, default=0, help="also list N broken video files in the train split")
    from pipelines.cli.args import add_overwrite_arg

    add_overwrite_arg(p, "OUT_DIR's manifest.parquet and videos")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pathlib import Path

    from components.data.synth import make_synthetic_dataset
    from pipelines.cli.args import guard_output

    check_args(args)
    guard_output(Path(args.out_dir) / "manifest.parquet", "out_dir", overwrite=args.overwrite)
    path = make_synthetic_dataset(args.out_dir, num_classes=args.classes, clips_per_class=args.clips_per_class,
                                  frames=args.frames, size=args.size, seed=args.seed, feature_dim=args.feature_dim,
                                  corrupt=args.corrupt, task=args.task)
    print(f"manifest: {path}")
    return 0


def check_args(args) -> None:
    """One line naming the flag, before any file is written (the generator's own checks would be tracebacks)."""
    from components.config import ConfigError

    limits = [("--classes", args.classes, 2), ("--clips-per-class", args.clips_per_class, 1),
              ("--frames", args.frames, 2), ("--size", args.size, 8), ("--seed", args.seed, 0),
              ("--feature-dim", args.feature_dim, 0), ("--corrupt", args.corrupt, 0)]
    for flag, value, least in limits:
        if value < least:
            raise ConfigError(f"{flag} must be >= {least}, got {value}")
    if args.size % 2:
        raise ConfigError(f"--size must be even (the videos are yuv420p), got {args.size}")
