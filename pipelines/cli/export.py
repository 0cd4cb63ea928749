"""`vidpeft export`: a run as one standalone .safetensors file and an MLflow pyfunc model."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a standalone model file and log an MLflow model (optionally registered)")
    p.add_argument("model", metavar="RUN_DIR", help="a training run directory")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where model.safetensors and export.json go (with --backbone-only: the file to write)")
    p.add_argument("--backbone-only", action="store_true",
                   help="write only the backbone, in its family's own key layout (what a downloaded checkpoint "
                        "holds; a later run's model.backbone.checkpoint loads it), e.g. after model.finetune=full")
    from pipelines.cli.args import add_overwrite_arg

    add_overwrite_arg(p, "the file --out names (or DIR/model.safetensors)")
    p.add_argument("--register", metavar="NAME", help="also register the MLflow model under this name")
    p.add_argument("--backbone-checkpoint", metavar="PATH",
                   help="the frozen backbone's weights, when the run's model.backbone.checkpoint moved")
    p.add_argument("--top-k", type=int, default=5, help="the MLflow model's default classes per row")
    p.add_argument("--no-mlflow", action="store_true", help="write the standalone file only")
    p.add_argument("--merge", action="store_true",
                   help="fold every mergeable adapter (LoRA) into the backbone's weights: the frozen model's size and "
                        "FLOPs; refuses, with the type's reason, when an adapter cannot be merged")
    p.add_argument("--onnx", action="store_true",
                   help="also write model.onnx (dynamic batch axis; mergeable adapters merged, the rest kept); "
                        "M2-CLIP: the image tower with the class-text embeddings precomputed")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pathlib import Path

    from components.config import ConfigError
    from pipelines.cli.args import guard_output

    if args.register is not None and (not args.register.strip() or any(c in args.register for c in "/:")):
        # MLflow's own rule, checked before anything is written or the run's MLflow record is touched
        raise ConfigError(f"--register {args.register!r}: a registered model's name is not empty and has no '/' or ':'")
    if args.register and args.no_mlflow:
        raise ConfigError("--register needs the MLflow model that --no-mlflow leaves out: drop one of them")
    if args.backbone_only:
        given = [f for f, on in (("--merge", args.merge), ("--onnx", args.onnx), ("--register", args.register),
                                 ("--top-k", args.top_k != 5)) if on]
        if given:
            raise ConfigError(f"--backbone-only writes the backbone file alone: {', '.join(given)} would be ignored; "
                              "drop them, or export the whole model (without --backbone-only)")
    inputs = [("RUN_DIR", args.model), ("--backbone-checkpoint", args.backbone_checkpoint),
              ("RUN_DIR's weights", Path(args.model) / "weights.safetensors")]
    if args.backbone_only:
        from pipelines.infer.trained import load_trained
        from pipelines.run.backbone_file import write_backbone_file

        guard_output(args.out, "--out", inputs, args.overwrite)
        finetune = load_trained(args.model, args.backbone_checkpoint).cfg.model.finetune
        out = write_backbone_file(args.model, args.out, args.backbone_checkpoint)
        print(f"[vidpeft] backbone: {out} (use it as model.backbone.checkpoint={out})")
        if finetune != "full":
            print(f"[vidpeft] note: the run trained with model.finetune={finetune}, so its backbone stayed frozen: "
                  f"this file is the unchanged backbone, without the run's adapters and head (the whole model: "
                  f"vidpeft export {args.model} --out DIR)")
        return 0
    from pipelines.infer.export import run_export

    guard_output(Path(args.out) / "model.safetensors", "--out", inputs, args.overwrite)

    run_export(args.model, args.out, args.register, args.backbone_checkpoint, not args.no_mlflow, args.top_k,
               merge=args.merge, onnx=args.onnx)
    return 0
