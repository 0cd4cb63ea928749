"""`vidpeft standins`: tiny synthetic stand-ins for the papers' datasets (the campaigns' tiny profile)."""

from __future__ import annotations


def run(args) -> int:
    from components.data.standins import make_standins

    written = make_standins(args.out, num_classes=args.classes, clips_per_class=args.clips_per_class,
                            frames=args.frames, size=args.size, tokens=args.tokens)
    for name, path in written.items():
        print(f"{name:<12} {path}")
    print(f"run a paper table on them: vidpeft ablate --campaign cm3t_table4 "
          f"--set profile=tiny   (from the folder holding {args.out}/)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("standins", help="write tiny synthetic stand-ins for EK-100, UDIVA, MPIIGI, K400, UCF101")
    p.add_argument("--out", default="standins", help="folder (the campaigns' tiny profile reads standins/)")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--clips-per-class", type=int, default=3, help="one of them is the val clip")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--tokens", type=int, default=4, help="tokens per clip of each side modality")
    p.set_defaults(fn=run)
