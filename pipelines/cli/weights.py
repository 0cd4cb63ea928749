"""`vidpeft weights inspect FILE`: what a weights file is and whether it loads into a backbone config.

Prints the detected format and wrapper, the tensor count, the published layout, the family and size
the tensors fit, and -- for the family/name given (or guessed) -- whether it loads, with the same
missing / unexpected / mismatched report a training run would stop on. Never starts Ray.
Exit code: 0 when it loads (or no family could be checked), 1 when it does not, 2 for an unreadable file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from components.config import ConfigError


def parse_kwargs(text: str) -> dict:
    """--kwargs as JSON or YAML flow style; anything else is one line saying what to write."""
    import yaml

    from components.config import yaml_load

    try:
        value = yaml_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--kwargs: not a JSON / YAML mapping ({' '.join(str(e).split())}); write e.g. "
                          "'{\"patch_size\": 8}' or '{patch_size: 8}'") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--kwargs: expected a mapping such as '{{patch_size: 8}}', got {text!r}")
    return value


def _backbone_config(args):
    """model.backbone from --config/--set (if given), then the explicit flags."""
    from components.backbones import BackboneConfig
    from components.config import from_dict, to_dict

    base = BackboneConfig(img_size=224)
    if args.config or args.overrides:
        from pipelines.cli.args import load_experiment

        base = load_experiment(args.config, args.overrides).model.backbone
    values = to_dict(base)
    for key in ("family", "name", "img_size", "num_frames"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.kwargs:
        values["kwargs"] = parse_kwargs(args.kwargs)
    values["checkpoint"] = str(args.file)
    return from_dict(BackboneConfig, values)


def _kwargs_hint(wf) -> str:
    """``, e.g. --family video_swin --name swin3d_b --kwargs '{...}'`` when the shapes tell the kwargs."""
    from components.weights.identify import flow, suggest_kwargs
    from components.weights.layouts import convert_for_family, detect_layout, layout_family

    owner = layout_family(detect_layout(wf.tensors))
    family = owner.name if owner else None
    fit = suggest_kwargs(family, convert_for_family(family, wf.tensors)[0]) if family else None
    return f", e.g. --family {family} --name {fit[0]} --kwargs '{flow(fit[1])}'" if fit else ""


def _exported_model(path: Path) -> str:
    """What a `vidpeft export` file holds, said for a person ('' for any other file): a whole model, not a
    backbone checkpoint, so its layout is vidpeft's own."""
    if path.suffix != ".safetensors":
        return ""
    from pipelines.infer.trained import read_standalone_meta

    try:
        meta = read_standalone_meta(path)
    except ConfigError:
        return ""
    if meta is None:
        return ""
    model = (meta.get("config") or {}).get("model") or {}
    backbone, adapters = model.get("backbone") or {}, model.get("adapters") or []
    kinds = ", ".join(sorted({a.get("type", "?") for a in adapters})) or "none"
    return (f"a `vidpeft export` file: backbone {backbone.get('family', '?')} {backbone.get('name', '?')}, "
            f"adapters: {kinds}; a whole model: give it to `vidpeft predict` / `evaluate` (`export --backbone-only` "
            f"writes the backbone alone)")


def cmd_inspect(args) -> int:
    import components.backbones  # noqa: F401  (registers the families whose layouts are recognised)
    from components.weights.identify import looks_like
    from components.weights.layouts import detect_layout, layout_name
    from components.weights.reader import WeightsError, read_weights_file

    path = Path(args.file)
    if path.is_dir():
        print(f"vidpeft: error: {path}: is a directory; give a weights file (a run's weights.safetensors, or the "
              f"file `vidpeft export` writes)", file=sys.stderr)
        return 2
    try:
        wf = read_weights_file(path, key_hint="weights inspect")
    except WeightsError as e:
        print(f"vidpeft: error: {e}", file=sys.stderr)
        return 2
    size_mb = path.stat().st_size / 1e6
    print(f"file:       {path} ({size_mb:.1f} MB)")
    print(f"format:     {wf.format}; wrapper: {', '.join(wf.wrapper) or 'none'}; {len(wf.tensors)} tensors, "
          f"{sum(t.numel() for t in wf.tensors.values()) / 1e6:.1f} M values")
    if wf.metadata:
        print(f"other:      {', '.join(sorted(wf.metadata)[:8])} (non-tensor entries, not used)")
    if wf.dropped:
        print(f"dropped:    {', '.join(wf.dropped[:4])} (classifier head)")
    whole = _exported_model(path)
    if whole:
        print(f"vidpeft:    {whole}")
        return 0
    layout = detect_layout(wf.tensors)
    print(f"layout:     {layout_name(layout)}")
    guesses = looks_like(wf.tensors)
    for family, size in guesses:
        print(f"looks like: model.backbone.family={family} model.backbone.name={size or '? (no named size fits)'}")
    if not args.family and not args.config and not guesses:
        print("loads:      not checked (give --family and --name)")
        return 0
    if not args.family and not args.config:
        args.family = guesses[0][0]
        args.name = args.name or guesses[0][1]
        if args.name is None:
            print(f"loads:      not checked (no named size fits; give --family, --name and --kwargs{_kwargs_hint(wf)})")
            return 0
    config = _backbone_config(args)
    label = f"{config.family} {config.name} (img_size {config.img_size}, num_frames {config.num_frames})"
    from components.backbones import build_backbone
    from components.weights.strict import capture_notes

    try:
        with capture_notes() as notes:
            build_backbone(config)
    except WeightsError as e:
        print(f"loads:      NO into {label}: {str(e).split(': ', 2)[-1]}")
        return 1
    print(f"loads:      yes into {label}")
    for note in notes:
        print(f"            {note}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("weights", help="inspect pretrained weights files", description=__doc__)
    wsub = p.add_subparsers(dest="weights_command", required=True)
    q = wsub.add_parser("inspect", help="format, layout, family/size and whether FILE loads into a config",
                        description=__doc__)
    q.add_argument("file", help="weights file (.pth, .pt, .bin, .safetensors, .pth.tar)")
    q.add_argument("--family", default=None, help="model.backbone.family to check against (default: guessed)")
    q.add_argument("--name", default=None, help="model.backbone.name to check against (default: guessed)")
    q.add_argument("--img-size", dest="img_size", type=int, default=None, help="model.backbone.img_size (default 224)")
    q.add_argument("--num-frames", dest="num_frames", type=int, default=None, help="model.backbone.num_frames")
    q.add_argument("--kwargs", default="", help="model.backbone.kwargs as JSON (tiny or custom architectures)")
    q.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="take model.backbone from this experiment YAML (repeatable), then apply the flags")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one config key, as for train")
    q.set_defaults(fn=cmd_inspect)
