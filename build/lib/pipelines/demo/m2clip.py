"""`vidpeft demo --recipe m2clip`: a tiny CLIP pretrained on captioned clips, adapted with M2-CLIP's TED
and text adapters, then recognising compositions it never saw.

Stages, each cached in the workdir like the CM3T recipe (`pipelines/demo/cm3t.py`):
  1. data      demo_data/compositions: one shape crossing a texture, class = colour x shape x
               direction in words ("red disc moving left", 32 compositions). 24 are the training
               compositions (seen.parquet, train/val), 8 are held out (heldout.parquet, split test):
               every pair of words in them occurs in training, the triple never does.
  2. pretrain  the tiny open_clip CLIP, both towers trained in full with the contrastive loss only on
               the training compositions (each caption "a red disc moving left" is its class prompt),
               then written alone as an open_clip checkpoint (runs/demo_m2clip/clip.safetensors), the
               file `vidpeft export --backbone-only` writes and a downloaded CLIP would be
  3. adapt     that CLIP frozen (loaded through model.backbone.checkpoint, both towers): TED + a text
               adapter with the four-head decoder, on the training compositions
  4. report    both runs close with zero-shot over the 8 held-out compositions; a table against
               chance, runs/demo_m2clip/demo_summary.json and demo_curves.png
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.runtime import tracking
from pipelines.demo.cm3t import CONFIGS, _say, _train
from pipelines.demo.report import Column, ReportSpec, report

LABELS = {"pretrain": "CLIP pretrained (contrastive, full)", "adapters": "TED + text adapters + decoder"}


@dataclass
class M2ClipDemoSize:
    """How much data the m2clip recipe generates (the test runs a smaller one)."""

    clips_per_class: int = 32  # per composition; a quarter of the training compositions' clips validate
    frames: int = 8
    size: int = 32


def _subset(table: pa.Table, labels: list[int], names: list[str], path: Path, split: str | None) -> Path:
    """The rows of ``labels``, relabelled 0..n-1 in that order, as a manifest of ``names``."""
    from components.data.manifest import write_manifest

    rows = table.filter(pc.is_in(table["label"], pa.array(labels, pa.int64())))
    new = {old: i for i, old in enumerate(labels)}
    rows = rows.set_column(rows.schema.get_field_index("label"), "label",
                           pa.array([new[v] for v in rows["label"].to_pylist()], pa.int64()))
    if split:
        rows = rows.set_column(rows.schema.get_field_index("split"), "split", pa.array([split] * rows.num_rows))
    return write_manifest(path, rows, names, feature_dims={}, regression_names=["speed"])


def make_data(work: Path, size: M2ClipDemoSize) -> tuple[Path, Path]:
    """(training compositions' manifest, held-out compositions' manifest)."""
    import pyarrow.parquet as pq

    from components.data.synth import make_synthetic_dataset
    from components.data.synth_scenes import composition_names, held_out_compositions

    root = work / "demo_data" / "compositions"
    seen, held = root / "seen.parquet", root / "heldout.parquet"
    if seen.exists() and held.exists():
        return seen, held
    if not (root / "manifest.parquet").exists():
        _say(f"writing the captioned set (compositions) to {root}")
        make_synthetic_dataset(root, task="compositions", clips_per_class=size.clips_per_class, frames=size.frames,
                               size=size.size, feature_dim=0, seed=2)
    table = pq.read_table(root / "manifest.parquet")  # video paths stay relative to the folder
    names, out = composition_names(), held_out_compositions()
    train = [i for i in range(len(names)) if i not in out]
    _subset(table, out, [names[i] for i in out], held, split="test")
    _subset(table, train, [names[i] for i in train], seen, split=None)
    _say(f"{len(train)} training compositions ({seen.name}), {len(out)} held out ({held.name}): "
         + ", ".join(names[i] for i in out))
    return seen, held


def run_m2clip_demo(workdir: str = ".", overrides: list[str] = (), size: M2ClipDemoSize | None = None) -> dict:
    from pipelines.run.backbone_file import write_backbone_file

    size = size or M2ClipDemoSize()
    start = time.time()
    work = Path(workdir).absolute()
    runs = work / "runs" / "demo_m2clip"
    common = [f"model.backbone.num_frames={size.frames}", f"model.backbone.img_size={size.size}"]
    if not os.environ.get(tracking.ENV_URI):  # the local store lives in the workdir, like the rest
        common.append(f"tracking.tracking_uri={tracking.resolve_tracking_uri('', work)}")

    _say("stage 1/4: data")
    seen, held = make_data(work, size)
    data = [f"data.manifest={seen}", f"zeroshot.manifest={held}", *common]

    _say("stage 2/4: pretraining the tiny CLIP (both towers, contrastive loss only) on the training compositions")
    results = {"pretrain": _train([CONFIGS / "m2clip_pretrain.yaml"], [*data, f"output_dir={runs / 'pretrain'}"],
                                  overrides)}
    clip = runs / "clip.safetensors"
    if not clip.exists():
        write_backbone_file(runs / "pretrain", clip)
        _say(f"exported the pretrained CLIP (both towers, open_clip's layout) to {clip}")

    _say("stage 3/4: TED + text adapters with the multi-task decoder, CLIP frozen")
    results["adapters"] = _train([CONFIGS / "m2clip_adapt.yaml"],
                                 [*data, f"output_dir={runs / 'adapters'}", f"model.backbone.checkpoint={clip}"],
                                 overrides)

    _say("stage 4/4: report")
    return report(runs, results, time.time() - start, _report_spec(work, runs, seen, held))


def _report_spec(work: Path, runs: Path, seen: Path, held: Path) -> ReportSpec:
    from components.data.manifest import read_manifest

    n_seen, n_held = (read_manifest(p, check_files=False).num_classes for p in (seen, held))
    classes = runs / "heldout_classes.txt"
    classes.write_text("\n".join(read_manifest(held, check_files=False).class_names) + "\n")
    return ReportSpec(
        labels=LABELS, title="Tiny CLIP: training compositions and held-out ones (zero-shot)",
        headline=(f"Compositions colour x shape x direction: val top-1 over the {n_seen} training ones "
                  f"(chance {1 / n_seen:.3f}), zero-shot top-1 over {n_held} held out (chance {1 / n_held:.3f})"),
        columns=[Column("val_top1", "val top-1", 1 / n_seen), Column("zeroshot_top1", "zero-shot top-1", 1 / n_held)],
        summary_extra={"zeroshot_chance": 1 / n_held},
        next_commands=[
            f"zero-shot: vidpeft zeroshot --checkpoint {runs / 'adapters'} --classes {classes} --manifest {held} "
            f"--template 'a {{}}'",
            f"predict: vidpeft predict {runs / 'adapters'} {seen} --split val --out {runs / 'preds.parquet'} "
            f"--top-k 3"])
