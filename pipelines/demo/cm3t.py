"""`vidpeft demo` (what `make demo` runs): a frozen, pretrained backbone adapted to new video.

Stages, each cached in the workdir (a rerun skips what is finished and resumes what was cut off):
  1. data      demo_data/source (appearance: a static white shape on black, 4 classes) and
               demo_data/target (motion_texture: coloured shapes crossing a texture, 8 directions,
               plus a noisy side "audio" feature)
  2. pretrain  the tiny ViT trained in full on the source set, then exported alone in timm's key
               layout (runs/demo/backbone.safetensors), as a downloaded checkpoint would be
  3. adapt     on the target set with that backbone frozen: a linear probe, MHVA+PT from the
               frames alone, and CM3T (MHVA+PT + CAA reading the side feature)
  4. report    a table against chance, demo_summary.json and demo_curves.png
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from components.config import ConfigError, resolve, to_dict
from pipelines.runtime import tracking
from pipelines.config import ExperimentConfig
from pipelines.demo.report import LABELS, Column, ReportSpec, report

CONFIGS = Path(__file__).parents[1] / "configs" / "demo"
VARIANTS = tuple(LABELS)


@dataclass
class DemoSize:
    """How much data the demo generates (the test runs a smaller one)."""

    source_clips_per_class: int = 150
    target_clips_per_class: int = 40
    target_classes: int = 8
    target_frames: int = 8
    size: int = 32


def _say(msg: str) -> None:
    print(f"[vidpeft demo] {msg}", flush=True)


def make_data(work: Path, size: DemoSize) -> tuple[Path, Path]:
    from components.data.synth import make_synthetic_dataset

    sets = {"source": dict(task="appearance", num_classes=4, clips_per_class=size.source_clips_per_class,
                           frames=2, feature_dim=0),
            "target": dict(task="motion_texture", num_classes=size.target_classes,
                           clips_per_class=size.target_clips_per_class, frames=size.target_frames)}
    paths = []
    for name, kw in sets.items():
        manifest = work / "demo_data" / name / "manifest.parquet"
        if not manifest.exists():
            _say(f"writing the {name} set ({kw['task']}) to {manifest.parent}")
            make_synthetic_dataset(manifest.parent, size=size.size, seed=0 if name == "source" else 1, **kw)
        paths.append(manifest)
    return paths[0], paths[1]


def _changed_settings(saved: Path, cfg: ExperimentConfig) -> list[str]:
    """What differs between a finished stage's saved config and this invocation's (tracking aside:
    the store's address may be spelled differently)."""
    from components.checkpoint import config_differences
    from pipelines.run.inputs import prepare_config

    if not saved.exists():
        return []
    # the saved config is the prepared one (class count and feature widths read from the manifest)
    before, now = to_dict(resolve(ExperimentConfig, [saved], [])), to_dict(prepare_config(cfg)[0])
    return [d.replace(": checkpoint ", ": earlier ", 1).replace(" vs current ", ", now ", 1)
            for d in config_differences(before, now, ignore=("tracking",))]


def demo_config(stages: list[str], overrides: list[str] = ()) -> ExperimentConfig:
    """The config of the demo's run made of ``stages`` (pipelines/configs/demo/<stage>.yaml, in order:
    ``["pretrain"]``, or ``["target", variant]``) with ``overrides``, as ``_train`` resolves it:
    benchmarks/recipe_check.py builds its small ViT and its pretraining from it."""
    return resolve(ExperimentConfig, [CONFIGS / f"{stage}.yaml" for stage in stages], list(overrides))


def _train(files: list[Path], fixed: list[str], overrides: list[str]) -> dict:
    """One stage's run; a finished run is read back, an interrupted one resumed."""
    from pipelines.run.train import run_train

    cfg = resolve(ExperimentConfig, files, [*fixed, *overrides])
    out = Path(cfg.output_dir)
    if (out / "metrics.json").exists():
        changed = _changed_settings(out / "config.yaml", cfg)
        if changed:
            raise ConfigError(f"{out} holds this stage finished with other settings ({'; '.join(changed[:3])}): "
                              f"delete {out.parent} to rerun the demo with these, or run it in another --workdir")
        _say(f"{cfg.name}: finished earlier, reusing {out}")
        return json.loads((out / "metrics.json").read_text())
    resume = (out / "run_info.json").exists()
    if resume:
        _say(f"{cfg.name}: continuing the interrupted run in {out}")
    return run_train(cfg, resume=resume)


def run_demo(workdir: str = ".", overrides: list[str] = (), size: DemoSize | None = None) -> dict:
    from pipelines.run.backbone_file import write_backbone_file

    size = size or DemoSize()
    start = time.time()
    work = Path(workdir).absolute()
    runs = work / "runs" / "demo"
    common = []
    if not os.environ.get(tracking.ENV_URI):  # the local store lives in the workdir, like the rest
        common.append(f"tracking.tracking_uri={tracking.resolve_tracking_uri('', work)}")

    _say("stage 1/4: data")
    source, target = make_data(work, size)

    _say("stage 2/4: pretraining the backbone in full on the source set")
    _train([CONFIGS / "pretrain.yaml"], [f"data.manifest={source}", f"output_dir={runs / 'pretrain'}", *common],
           overrides)
    backbone = runs / "backbone.safetensors"
    if not backbone.exists():
        write_backbone_file(runs / "pretrain", backbone)
        _say(f"exported the pretrained backbone to {backbone}")

    results = {}
    for n, variant in enumerate(VARIANTS, 1):
        _say(f"stage 3/4 ({n}/{len(VARIANTS)}): {LABELS[variant]}, backbone frozen")
        fixed = [f"data.manifest={target}", f"output_dir={runs / variant}",
                 f"model.backbone.checkpoint={backbone}", f"model.backbone.num_frames={size.target_frames}", *common]
        results[variant] = _train([CONFIGS / "target.yaml", CONFIGS / f"{variant}.yaml"], fixed, overrides)

    _say("stage 4/4: report")
    return report(work, results, time.time() - start, _report_spec(work, results, 1.0 / size.target_classes))


def _report_spec(work: Path, results: dict, chance: float) -> ReportSpec:
    target = work / "demo_data" / "target"
    # the manifest's rows carry the side feature the CM3T run reads; bare mp4 files have none
    best = results["adapters_side"].get("output_dir")
    return ReportSpec(
        labels=LABELS, title="Frozen pretrained ViT on a new video task",
        headline=f"Target task: direction of motion over texture, {round(1 / chance)} classes (chance {chance:.3f})",
        columns=[Column("val_top1", "val top-1", chance)],
        next_commands=[
            f"predict: vidpeft predict {best} {target / 'manifest.parquet'} --split val "
            f"--out {work / 'preds.parquet'} --top-k 3",
            f"search: vidpeft tune --config demo/target --config demo/adapters_frames --space demo_adapters --trials 4 "
            f"--set data.manifest={target / 'manifest.parquet'} "
            f"--set model.backbone.checkpoint={work / 'runs' / 'demo' / 'backbone.safetensors'}"])
