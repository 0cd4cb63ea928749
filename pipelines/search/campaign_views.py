"""Campaign cells tested with the papers' protocol: campaign (or profile) ``eval_views: 4x3``.

After its cells have trained, each finished cell's best checkpoint is evaluated on its validation
split with clips x crops views (`vidpeft evaluate --views`, so data.eval_max_views chunks apply), once:
the result stays in the cell's folder (``views_<spec>/eval_<split>.json``). Two metrics go to the cell's
MLflow run for the report: ``best/<metric>``, the best checkpoint's validation value with the cell's own
views (one view unless it sets data.eval_clips/eval_crops), and ``views_<spec>/<metric>``, the same
checkpoint with the protocol's views, so the report shows 1-view and multi-view side by side.
"""

from __future__ import annotations

import json
from dataclasses import replace

from components.config import ConfigError, from_dict
from pipelines.config import ExperimentConfig
from pipelines.data.eval_views import parse_views
from pipelines.runtime import tracking

BEST = "best/"


def views_metric(spec: str, metric: str) -> str:
    return f"views_{spec}/{metric}"


def check_views(campaign_file, cells, spec: str) -> None:
    """Every cell can be evaluated with ``spec`` views (several crops need data.decode_scale > 1)."""
    clips, crops = parse_views(spec)
    for c in cells:
        data = from_dict(ExperimentConfig, c.data).data
        try:
            replace(data, eval_clips=clips, eval_crops=crops).__post_init__()
        except ValueError as e:
            raise ConfigError(f"{campaign_file}: eval_views {spec}, cell {c.name}: {e}") from None
        if not data.val_split:
            raise ConfigError(f"{campaign_file}: eval_views {spec}, cell {c.name}: the cell has no validation split")


def evaluate_cells(cells, spec: str, uri: str) -> list[str]:
    """Evaluate every finished cell not evaluated with ``spec`` yet; returns the failures (cell: why)."""
    from pipelines.infer.evaluate import run_evaluate

    clips, crops = parse_views(spec)
    failed = []
    for c in cells:
        if not c.finished():
            continue
        split = c.data["data"]["val_split"]
        out = c.output_dir / f"views_{spec}"
        if (out / f"eval_{split}.json").is_file():
            continue
        print(f"[vidpeft] {c.name}: best checkpoint on {split} with {spec} views", flush=True)
        try:
            res = run_evaluate(str(c.output_dir), split=split, clips=clips, crops=crops, out=str(out), log=False)
        except Exception as e:  # noqa: BLE001 - one cell's failure must not lose the others' table
            failed.append(f"{c.name}: evaluation with {spec} views failed: {e}")
            continue
        best = json.loads((c.output_dir / "metrics.json").read_text())
        metrics = {views_metric(spec, f"val_{k}"): v for k, v in res["metrics"].items() if v is not None}
        metrics.update({f"{BEST}{k}": v for k, v in best.items()
                        if k.startswith("val_") and isinstance(v, (int, float)) and not isinstance(v, bool)})
        tracking.log_metrics(uri, best["run_id"], metrics, step=0)
    return failed
