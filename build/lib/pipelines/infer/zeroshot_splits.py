"""UCF101's zero-shot protocol: one model, the test lists of the three official splits, top-1 as
mean and std over the splits (how M2-CLIP's Table 3 and its references report "78.7 ± 1.2").

    vidpeft prepare ucf101 --annotations ucfTrainTestlist --videos UCF-101 --out data/ucf101_fold1/manifest.parquet --set fold=1
    (the same with fold=2 and fold=3)
    vidpeft zeroshot-splits --checkpoint runs/m2clip_k400 --manifest data/ucf101_fold{1,2,3}/manifest.parquet

std is the sample standard deviation over the splits (n - 1 = 2 degrees of freedom); the JSON keeps
every split's numbers so another convention can be computed from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean, stdev

from components.config import ConfigError
from pipelines.infer.zeroshot import run_zeroshot


def run_splits(checkpoint: str | None, manifests: list[str], classes: str = "", files: list[str] = (),
               overrides: list[str] = (), split: str = "test", templates: list[str] | None = None,
               output: str | None = None) -> dict:
    if len(manifests) < 2:
        raise ConfigError(f"zeroshot-splits: give the manifest of every split (UCF101: 3), got {len(manifests)}")
    out_dir = Path(output).parent if output else (Path(checkpoint) if checkpoint else Path("."))
    per_split = []
    for i, manifest in enumerate(manifests, 1):
        print(f"[vidpeft] zero-shot split {i}/{len(manifests)}: {manifest}", flush=True)
        result = run_zeroshot(checkpoint, classes, manifest, list(files), list(overrides), split, templates,
                              str(out_dir / f"zeroshot_split{i}.json"))
        per_split.append({"manifest": str(Path(manifest).absolute()), **{k: result.get(k) for k in
                          ("top1", "top5", "clips", "skipped_clips", "views")}})
    summary = {"splits": per_split, "checkpoint": checkpoint}
    for k in ("top1", "top5"):
        values = [s[k] for s in per_split if s[k] is not None]
        summary[f"{k}_mean"] = mean(values) if values else None
        summary[f"{k}_std"] = stdev(values) if len(values) > 1 else None
    path = Path(output) if output else out_dir / "zeroshot_splits.json"
    path.write_text(json.dumps(summary, indent=2))
    tops = ", ".join(f"{100 * s['top1']:.1f}" for s in per_split)
    print(f"zero-shot top-1 over {len(per_split)} splits: {100 * summary['top1_mean']:.1f} ± "
          f"{100 * summary['top1_std']:.1f} % (splits: {tops})\nwritten: {path}")
    return summary
