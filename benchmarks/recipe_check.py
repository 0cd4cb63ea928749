"""Do the shipped CM3T adapter presets train with their own recipes? (issue 27, item 7)

1. data     a SOURCE set (appearance: a static white shape on black, 4 classes) and a TARGET set
            (motion_texture: shapes crossing a texture, class = direction of motion), rendered in
            memory by components/data/synth_scenes.py (the check is about recipes, not decoding).
2. pretrain the small ViT of the demo (64-d, 4 blocks, patch 8 at 32 px) trained in full on the source
            set with vidpeft's model builder, engine and optimiser, then written alone in timm's key
            layout (``native_backbone_state``, what `vidpeft export --backbone-only` writes): the
            stand-in for a downloaded checkpoint.
3. adapt    every shipped CM3T preset with ``finetune: adapters``, and the linear probe, resolved with
            its own recipe (``resolve(ExperimentConfig, [preset])``: lr scaled by optim.lr_base_batch to
            this check's batch, weight decay with its exclusions, warm-up, epochs, adapter widths as
            ratios of the block width), with only the backbone swapped for the pretrained small ViT
            (frames mean-pooled, their features read in order by the head, as the demo's target runs).
            Side modalities (cm3t, mhva_pt_mmca) get uninformative noise features: they too have to
            learn the motion from the frames. Data augmentation is not applied (a flip would swap
            the direction labels); the recipe's regularisers are (mixup/cutmix, label smoothing,
            drop-path, EMA: built as a Train worker builds them, pipelines/run/regularisers.py).
            ``--backbone video_vit`` swaps in the same-size ViT over space-time (VideoMAE's tubelets,
            joint attention), pretrained the same way: an experiment beside the check, not its verdict.
            So is ``--pretrain-objective mae``: the stand-in pretrained self-supervised (benchmarks/standin_mae.py).
4. verdict  every preset's mean val top-1 over the seeds beats the linear probe's by >= ``--margin``, and
            no run collapsed (one predicted class on the val set, a non-finite loss, or a last-epoch train
            loss within 2% of ln C; not that last one for a recipe with soft targets: mixing, smoothing).

    python benchmarks/recipe_check.py                 # writes benchmarks/results/recipe_check.json
    python benchmarks/recipe_check.py --tiny --out /tmp/rc.json   # what the test runs (seconds per run)
    python benchmarks/recipe_check.py --size small --out benchmarks/results/recipe_check_small.json
    python benchmarks/recipe_check.py --size small --presets pt_only,lora \
        --merge-into benchmarks/results/recipe_check_small.json   # rerun some rows of an earlier table
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine  # noqa: E402
from components.config import resolve, to_dict  # noqa: E402
from components.engine import TrainStep, make_scheduler, optimizer_for, run_pass  # noqa: E402
from components.model import build_model  # noqa: E402
from components.param_counts import parameter_counts  # noqa: E402
from components.tasks import model_task  # noqa: E402
from pipelines.config import ExperimentConfig  # noqa: E402
from pipelines.config_checks import soft_targets  # noqa: E402
from pipelines.demo.cm3t import demo_config  # noqa: E402
from pipelines.presets import PRESETS  # noqa: E402
from pipelines.run.regularisers import WorkerRegularisers  # noqa: E402

UNUSED = ["data.manifest=unused"]  # the check renders its clips in memory
# The demo's small ViT, as its target runs build it (pipelines/configs/demo/target.yaml)
SMALL_VIT = to_dict(demo_config(["target"], UNUSED).model.backbone)
# The same size as a video ViT: tubelets of 2 frames, every block attending over space and time jointly
SMALL_VIDEO_VIT = {"family": "videomae", "name": "videomae_small", "img_size": SMALL_VIT["img_size"],
                   "kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4, "tubelet_size": 2}}
BACKBONES = {"vit": SMALL_VIT, "video_vit": SMALL_VIDEO_VIT}
SIDE_DIM = 16


@dataclass
class Size:
    source_per_class: int = 100
    target_classes: int = 6
    target_train_per_class: int = 24
    target_val_per_class: int = 16
    frames: int = 8
    pretrain_epochs: int = 8
    batch: int = 16
    seeds: tuple[int, ...] = (0, 1, 2)


TINY = Size(source_per_class=40, target_classes=4, target_train_per_class=24, target_val_per_class=12,
            frames=4, pretrain_epochs=10, batch=16)
# between the two: larger sets than the test's, its clip length (every preset over 3 seeds took 12.5 min
# on 2 loaded cores)
SMALL = Size(source_per_class=60, target_classes=4, target_train_per_class=40, target_val_per_class=20,
             frames=4, pretrain_epochs=10, batch=16)
SIZES = {"tiny": TINY, "small": SMALL, "default": Size()}


def adapter_presets() -> list[str]:
    """Every shipped CM3T preset that trains adapters on a frozen backbone, by name."""
    names = []
    for path in sorted((PRESETS / "cm3t").glob("*.yaml")):
        cfg = resolve(ExperimentConfig, [path], UNUSED)
        if cfg.model.finetune == "adapters":
            names.append(path.stem)
    return names


def render(task: str, classes: int, per_class: int, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(video (N, T, H, W, C) uint8, labels (N,)) of ``task``'s scenes, ``per_class`` clips per class."""
    from components.data.synth_scenes import TASKS

    draw = TASKS[task][0]
    clips, labels = [], []
    for i in range(classes * per_class):
        label = i % classes
        video, _, _ = draw(np.random.default_rng([seed, i]), label, classes, frames, SMALL_VIT["img_size"])
        clips.append(video)
        labels.append(label)
    return torch.from_numpy(np.stack(clips)), torch.tensor(labels)


def batches(video, labels, batch: int, seed: int | None, side: dict | None = None):
    """Shuffled (seed given) or ordered batches as the model takes them."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)) if seed is not None \
        else torch.arange(len(labels))
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        b = {"video": video[idx], "target": labels[idx]}
        for name, feat in (side or {}).items():
            b[f"side_{name}"] = feat[idx]
            b[f"side_{name}_mask"] = torch.ones(len(idx), dtype=torch.bool)
        yield b


def train(cfg: ExperimentConfig, num_classes: int, data: dict, batch: int, seed: int, train_only: str = "",
          pos_embed: str = "learned", model: torch.nn.Module | None = None):
    """Train ``cfg``'s model with its own optimiser recipe: (val top-1, classes predicted, losses, ...; the model).
    ``train_only`` (a diagnostic): of the backbone's trainable parameters only those whose name matches this
    regex train, beside the head. ``pos_embed``: ``sincos`` sets the position embedding to MAE's 2D sin-cos
    before training (for pretraining a stand-in). ``model``: train this one (built from ``cfg``) instead."""
    torch.manual_seed(seed)
    model = model if model is not None else build_model(cfg.model, num_classes)
    if pos_embed == "sincos":
        sincos_position_embedding(model)
    if train_only:
        for name, p in model.backbone.named_parameters():
            p.requires_grad_(p.requires_grad and re.search(train_only, name) is not None)
    task = model_task(cfg.model)
    o = cfg.optim
    optimizer, lr = optimizer_for(model, o, batch)
    per_epoch = math.ceil(len(data["train"][1]) / batch)
    scheduler = make_scheduler(optimizer, per_epoch * o.epochs, per_epoch * o.warmup_epochs, o.min_lr_ratio)
    regs = WorkerRegularisers(cfg, model, num_classes)  # the recipe's mixing, smoothing, drop-path and EMA
    step = TrainStep(model, optimizer, "cpu", amp="off", grad_clip=o.grad_clip, scheduler=scheduler,
                     transform=regs.transform, ema=regs.ema)
    losses = []
    for epoch in range(o.epochs):
        r = run_pass(model, batches(*data["train"], batch, seed * 1000 + epoch, data.get("side_train")), task, step=step)
        step.apply()
        losses.append(float(r.acc.compute(None)["loss"]))
    with regs.evaluated():
        r = run_pass(model, batches(*data["val"], 64, None, data.get("side_val")), task, keep_scores=True)
    predicted = torch.cat(r.scores).argmax(1)
    top1 = float((predicted == data["val"][1]).float().mean())
    return {"top1": top1, "predicted_classes": int(predicted.unique().numel()), "train_loss": losses, "lr": lr,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}, model


def collapsed(run: dict, num_classes: int, soft_targets: bool = False) -> str:
    """Why a run counts as collapsed ('' = it did not). ``soft_targets`` (the recipe mixes clips or smooths
    labels): its train loss is against soft targets, whose floor is above 0, so ln C says nothing there."""
    if run["predicted_classes"] <= 1:
        return "predicts one class"
    last = run["train_loss"][-1]
    if not math.isfinite(last):
        return "non-finite loss"
    if not soft_targets and last > 0.98 * math.log(num_classes):
        return f"train loss {last:.3f} stayed at ln C = {math.log(num_classes):.3f}"
    return ""


def sincos_position_embedding(model: torch.nn.Module) -> None:
    """Set a timm ViT's learned position embedding to MAE's fixed-form 2D sin-cos (the class token's row
    0): position at the scale of the tokens, as a published checkpoint carries it."""
    from timm.layers import build_sincos2d_pos_embed

    vit = model.backbone.vit
    grid = vit.patch_embed.grid_size
    with torch.no_grad():
        table = build_sincos2d_pos_embed(list(grid), vit.pos_embed.shape[-1])  # (H*W, D)
        vit.pos_embed[0, -table.shape[0]:] = table
        vit.pos_embed[0, :-table.shape[0]] = 0


def pretrain(size: Size, out: Path, arch: str = "vit", standin: dict | None = None) -> tuple[Path, float]:
    """The small ViT (``arch``: vit or video_vit) in full on the source set, exported alone in its family's
    layout (what `vidpeft export --backbone-only` writes) to ``out``; (file, its val top-1). ``standin``
    (experiments): ``lr`` replaces the demo's pretraining lr, ``pos_embed: sincos`` starts it from MAE's."""
    from components.adapters.unwrap import native_backbone_state
    from components.checkpoint import save_safetensors

    standin = standin or {}
    frames = 2 if arch == "vit" else size.frames  # a video ViT's positions span the target's clip
    video, labels = render("appearance", 4, size.source_per_class, frames, seed=0)
    n_val = len(labels) // 5
    data = {"train": (video[n_val:], labels[n_val:]), "val": (video[:n_val], labels[:n_val])}
    sets = [] if arch == "vit" else [f"model.backbone={json.dumps({**BACKBONES[arch], 'num_frames': frames})}"]
    if "lr" in standin:
        sets.append(f"optim.lr={standin['lr']}")
    cfg = demo_config(["pretrain"], [*UNUSED, f"optim.epochs={size.pretrain_epochs}", *sets])
    if standin.get("objective") == "mae":  # no labels: MAE on the source frames; top-1 is a linear probe's
        from benchmarks.standin_mae import mae_pretrain

        torch.manual_seed(0)
        model = build_model(cfg.model, 4)
        mae_pretrain(model, data["train"][0][:, :1], size.pretrain_epochs, **({"lr": standin["lr"]} if "lr" in standin else {}))
        probe = replace(cfg, model=replace(cfg.model, finetune="linear"))
        probe_model = build_model(probe.model, 4)
        probe_model.backbone.load_state_dict(model.backbone.state_dict())
        result, _ = train(probe, 4, data, size.batch, seed=0, model=probe_model)
    else:
        result, model = train(cfg, 4, data, size.batch, seed=0, pos_embed=standin.get("pos_embed", "learned"))
    save_safetensors(out, native_backbone_state(model.backbone), {})
    return out, result["top1"]


def adapt_config(preset: str, backbone: Path, size: Size, overrides: list[str] = (),
                 arch: str = "vit") -> ExperimentConfig:
    """The preset with its own recipe, on the pretrained small ViT (widths follow its ratios)."""
    vit = {**BACKBONES[arch], "checkpoint": str(backbone), "num_frames": size.frames}
    sets = [*UNUSED, f"model.backbone={json.dumps(vit)}"]
    cfg = resolve(ExperimentConfig, [PRESETS / "cm3t" / f"{preset}.yaml"], [*sets, *overrides])
    modalities = [replace(m, dim=SIDE_DIM, tokens=1) for m in cfg.model.modalities]
    return replace(cfg, model=replace(cfg.model, modalities=modalities))


def run_check(size: Size, work: Path, presets: list[str], margin: float, say=print, overrides: list[str] = (),
              arch: str = "vit", standin: dict | None = None, train_only: str = "") -> dict:
    start = time.time()
    work.mkdir(parents=True, exist_ok=True)
    backbone, source_top1 = pretrain(size, work / "small_vit.safetensors", arch, standin)
    say(f"pretrained the small ViT on the source set: val top-1 {source_top1:.3f}")
    c = size.target_classes
    train_v, train_y = render("motion_texture", c, size.target_train_per_class, size.frames, seed=1)
    val_v, val_y = render("motion_texture", c, size.target_val_per_class, size.frames, seed=2)
    noise = torch.Generator().manual_seed(3)
    data = {"train": (train_v, train_y), "val": (val_v, val_y),
            "side_train": {n: torch.randn(len(train_y), SIDE_DIM, generator=noise) for n in ("audio", "flow")},
            "side_val": {n: torch.randn(len(val_y), SIDE_DIM, generator=noise) for n in ("audio", "flow")}}
    rows, seen = {}, {}
    for preset in ["linear_probe", *presets]:
        cfg = adapt_config(preset, backbone, size, overrides if preset != "linear_probe" else [], arch)
        same = json.dumps(to_dict(replace(cfg, name="")), sort_keys=True)
        if same in seen:  # e.g. mhva_pt_vivit: on the small ViT the same run as mhva_pt
            rows[preset] = {**rows[seen[same]], "same_as": seen[same]}
            say(f"{preset:<18} on the small ViT: the same config as {seen[same]} (not rerun)")
            continue
        seen[same] = preset
        runs = []
        for seed in size.seeds:
            run, model = train(replace(cfg, seed=seed), c, data, size.batch, seed,
                               train_only if preset != "linear_probe" else "")
            run["trainable_pct"] = parameter_counts(model)["trainable_pct"]
            run["collapsed"] = collapsed(run, c, soft_targets(cfg))
            runs.append(run)
            say(f"{preset:<18} seed {seed}: val top-1 {run['top1']:.3f}, {run['predicted_classes']} classes predicted, "
                f"last train loss {run['train_loss'][-1]:.3f}{'  COLLAPSED: ' + run['collapsed'] if run['collapsed'] else ''}")
        tops = [r["top1"] for r in runs]
        rows[preset] = {"mean_top1": float(np.mean(tops)), "std_top1": float(np.std(tops)), "top1": tops,
                        "collapsed_runs": sum(bool(r["collapsed"]) for r in runs), "epochs": cfg.optim.epochs,
                        "lr": runs[0]["lr"], "trainable_pct": runs[0]["trainable_pct"], "runs": runs}
    result = {"size": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(size).items()},
              "backbone": arch, **({"standin": standin} if standin else {}),
              **({"train_only": train_only} if train_only else {}), "chance": 1.0 / c, "margin": margin,
              "source_top1": source_top1, "rows": rows, "seconds": round(time.time() - start, 1)}
    return judge(result)


def judge(result: dict) -> dict:
    """Every preset row's margin over the linear probe row and its verdict, and ``all_pass``."""
    rows, margin = result["rows"], result["margin"]
    probe = rows["linear_probe"]["mean_top1"]
    for name, row in rows.items():
        if name != "linear_probe":
            row["margin_over_probe"] = row["mean_top1"] - probe
            row["passes"] = row["margin_over_probe"] >= margin and row["collapsed_runs"] == 0
    result["all_pass"] = all(row["passes"] for name, row in rows.items() if name != "linear_probe")
    return result


def merge(earlier: dict, new: dict, when: str, command: list[str]) -> dict:
    """``earlier``'s table with ``new``'s rows (the linear probe's included) in their place, judged
    again against the probe row now in it; ``reruns`` says which rows each merge replaced, when."""
    for key, default in (("size", None), ("backbone", "vit"), ("margin", None), ("source_top1", None),
                         ("standin", {}), ("train_only", "")):
        # tables from before --backbone are the per-frame ViT's; from before --pretrain-lr etc. the demo's stand-in
        if earlier.get(key, default) != new.get(key, default):
            raise ValueError(f"--merge-into: its {key} ({earlier.get(key, default)}) differs from this run's "
                             f"({new.get(key, default)}): its rows were not measured on the same check")
    rows = {**earlier["rows"], **new["rows"]}
    for name, row in rows.items():  # copies of a preset that was rerun follow it
        if row.get("same_as") in new["rows"]:
            rows[name] = {**rows[row["same_as"]], "same_as": row["same_as"]}
    reruns = [*earlier.get("reruns", []), {"time": when, "rows": list(new["rows"]), "seconds": new["seconds"],
                                           "command": " ".join(command), "machine": new["machine"]}]
    return judge({**earlier, "rows": rows, "reruns": reruns})


def table(result: dict) -> str:
    lines = [f"| preset | val top-1 (mean +- std, {len(result['size']['seeds'])} seeds) | vs linear probe | epochs | lr used "
             f"| trainable % | collapsed runs | passes |", "|---|---|---|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        vs = "" if name == "linear_probe" else f"{row['margin_over_probe']:+.3f}"
        ok = "" if name == "linear_probe" else ("yes" if row["passes"] else "NO")
        lines.append(f"| {name} | {row['mean_top1']:.3f} +- {row['std_top1']:.3f} | {vs} | {row['epochs']} | {row['lr']:.2e} "
                     f"| {row['trainable_pct']:.1f} | {row['collapsed_runs']} | {ok} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="the test's size: 4 classes, 4 frames, small sets (= --size tiny)")
    p.add_argument("--size", choices=sorted(SIZES), default="default",
                   help="tiny (the test's), small (larger sets, 4 frames) or default (6 classes, 8 frames)")
    p.add_argument("--presets", default="", help="comma-separated CM3T presets (default: every adapter preset)")
    p.add_argument("--margin", type=float, default=0.1, help="top-1 every preset must gain over the linear probe")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--work", default="", help="where the pretrained backbone is written (default: a temp dir)")
    p.add_argument("--set", action="append", default=[], help="key=value applied to every preset (experiments "
                   "only: the check's verdict is on the presets as shipped)")
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="vit",
                   help="vit: the demo's per-frame small ViT; video_vit: the same size over space-time (tubelets)")
    p.add_argument("--source-per-class", type=int, default=0, help="stand-in experiments: source clips per class "
                   "(0 = the size's)")
    p.add_argument("--pretrain-epochs", type=int, default=0, help="stand-in experiments: pretraining epochs (0 = the size's)")
    p.add_argument("--pretrain-lr", type=float, default=0.0, help="stand-in experiments: pretraining lr (0 = the demo's)")
    p.add_argument("--pos-embed", choices=("learned", "sincos"), default="learned",
                   help="stand-in experiments: sincos starts the stand-in's position embedding from MAE's 2D sin-cos")
    p.add_argument("--pretrain-objective", choices=("supervised", "mae"), default="supervised",
                   help="stand-in experiments: mae pretrains it self-supervised (benchmarks/standin_mae.py: masked "
                        "patches, fixed sin-cos positions) instead of on the source labels")
    p.add_argument("--train-only", default="", metavar="REGEX", help="diagnostics: of each preset's trainable backbone "
                   "parameters only those whose name matches REGEX train (with the head), e.g. full_ft with pos_embed")
    p.add_argument("--out", default=str(RESULTS / "recipe_check.json"))
    p.add_argument("--merge-into", default="", metavar="FILE",
                   help="put this run's rows (and the linear probe's) in place of theirs in FILE, an earlier result "
                        "of the same size, keep its other rows, judge them all again and write FILE (not --out)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    presets = [x.strip() for x in a.presets.split(",") if x.strip()] or adapter_presets()
    size = TINY if a.tiny else SIZES[a.size]
    size = replace(size, source_per_class=a.source_per_class or size.source_per_class,
                   pretrain_epochs=a.pretrain_epochs or size.pretrain_epochs)
    for flag, value in (("--source-per-class", a.source_per_class), ("--pretrain-epochs", a.pretrain_epochs),
                        ("--pretrain-lr", a.pretrain_lr)):
        if value < 0:
            p.error(f"{flag} must be > 0 (or 0 for the default), got {value}")
    if a.backbone != "vit" and (a.pos_embed == "sincos" or a.pretrain_objective == "mae"):
        p.error("--pos-embed sincos and --pretrain-objective mae are for the per-frame ViT (--backbone vit)")
    try:
        re.compile(a.train_only)
    except re.error as e:
        p.error(f"--train-only {a.train_only!r}: not a regular expression ({e})")
    standin = {**({"lr": a.pretrain_lr} if a.pretrain_lr else {}),
               **({"pos_embed": a.pos_embed} if a.pos_embed != "learned" else {}),
               **({"objective": a.pretrain_objective} if a.pretrain_objective != "supervised" else {})}
    earlier = None
    if a.merge_into:  # read before the run: a bad file fails at once, not after it
        try:
            earlier = json.loads(Path(a.merge_into).read_text())
        except (OSError, ValueError) as e:
            print(f"recipe_check: --merge-into {a.merge_into}: cannot read it as an earlier result: {e}", file=sys.stderr)
            return 2
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = run_check(size, Path(a.work or tmp), presets, a.margin, overrides=a.set, arch=a.backbone,
                           standin=standin, train_only=a.train_only)
    result["size_name"] = "tiny" if a.tiny else a.size
    result["machine"] = machine()
    result["command"] = " ".join(["python", "benchmarks/recipe_check.py", *(sys.argv[1:] if argv is None else argv)])
    if earlier is not None:
        a.out = a.merge_into
        try:
            result = merge(earlier, result, result["machine"]["time"],
                           ["python", "benchmarks/recipe_check.py", *(sys.argv[1:] if argv is None else argv)])
        except (ValueError, KeyError) as e:
            print(f"recipe_check: --merge-into {a.out}: {e}", file=sys.stderr)
            return 2
    result["table"] = table(result)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print("\n" + result["table"])
    print(f"\nlinear probe {result['rows']['linear_probe']['mean_top1']:.3f} (chance {result['chance']:.3f}); "
          f"every adapter preset >= +{a.margin} and none collapsed: {'yes' if result['all_pass'] else 'NO'}; {a.out}")
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
