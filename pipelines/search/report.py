"""`vidpeft report`: a campaign's table (Markdown + CSV) and plot (PNG), rebuilt from MLflow alone.

Source: the campaign's parent run (tags vidpeft.kind=campaign, vidpeft.campaign=NAME; the newest if
several) holds the layout (datasets, variants, seeds, each cell's key) as an artifact; its nested runs
are the cells, matched by their vidpeft.cell_key tag. Per dataset x variant: the metric's final-epoch
value as mean +- std over seeds, epochs to converge (the first epoch within CONVERGED of the run's best
value, averaged over seeds), trainable % (adapters only, the papers' column; and with the task head) and
GFLOPs per clip. With the campaign's ``eval_views`` (e.g. 4x3), each column also shows its best
checkpoint with one view and with those views, side by side (pipelines/search/campaign_views.py).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from statistics import mean, stdev

from components.config import ConfigError
from pipelines.runtime import tracking
from pipelines.search.campaign_views import BEST, views_metric

LAYOUT = "campaign_layout.json"  # artifact of a campaign's parent run: what `vidpeft report` rebuilds from

CONVERGED = 0.01  # absolute, in the metric's units (= 1 point for accuracies and mAP in [0, 1])
PERCENT_METRICS = ("top1", "top5", "mAP")  # stored in [0, 1], shown in % as the papers do


def find_parent(client, uri: str, name: str, experiment: str = ""):
    """The newest campaign parent run named ``name`` (in ``experiment``, else in any experiment)."""
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        ids = [exp.experiment_id] if exp else []
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`vidpeft.kind` = 'campaign' and tags.`vidpeft.campaign` = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=1) if ids else []
    if not runs:
        where = f"experiment {experiment!r}" if experiment else "any experiment"
        raise ConfigError(f"no campaign {name!r} in {where} of the MLflow store {uri}")
    return runs[0]


def epochs_to_converge(history: list[tuple[int, float]], mode: str) -> int | None:
    """1-based epoch at which the metric first came within CONVERGED of its best value."""
    values = [(s, v) for s, v in sorted(history) if not math.isnan(v)]
    if not values:
        return None
    best = (max if mode == "max" else min)(v for _, v in values)
    return next(s for s, v in values if abs(v - best) <= CONVERGED) + 1


def collect(uri: str, name: str, experiment: str = "") -> tuple[dict, list[dict]]:
    """(layout, one row per cell with its run's numbers or None where the cell has no finished run)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small JSON file
    client = tracking.client(uri)
    parent = find_parent(client, uri, name, experiment)
    with tempfile.TemporaryDirectory() as tmp:

        layout = json.loads(Path(client.download_artifacts(parent.info.run_id, LAYOUT, tmp)).read_text())
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.status = 'FINISHED'",
                                  order_by=["attributes.end_time DESC"], max_results=10000)
    by_key: dict = {}
    for run in children:  # newest first: a cell rerun under the same key wins
        by_key.setdefault(run.data.tags.get("vidpeft.cell_key"), run)
    columns = {d["name"]: d for d in layout["datasets"]}
    extras = layout.get("metrics", [])
    rows = []
    for cell in layout["cells"]:
        column = columns[cell["dataset"]]
        metric, mode = column.get("metric", layout["metric"]), column.get("mode", layout["mode"])
        run = by_key.get(cell["key"])
        row = {**cell, "run_id": None, "value": None, "epochs": None, "trainable_pct": None,
               "trainable_pct_with_head": None, "gflops": None, "extra": {}, "best": None, "views": None}
        if run is not None:
            history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric)]
            row.update(run_id=run.info.run_id, value=run.data.metrics.get(metric),
                       epochs=epochs_to_converge(history, mode), trainable_pct=run.data.metrics.get("trainable_pct"),
                       trainable_pct_with_head=run.data.metrics.get("trainable_pct_with_head"), gflops=run.data.metrics.get("gflops"),
                       extra={m: run.data.metrics.get(m) for m in extras})
            if layout.get("eval_views"):
                row.update(best=run.data.metrics.get(f"{BEST}{metric}"),
                           views=run.data.metrics.get(views_metric(layout["eval_views"], metric)))
        rows.append(row)
    return layout, rows


def _avg(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def _mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    return (mean(values) if values else None), (stdev(values) if len(values) > 1 else (0.0 if values else None))


def summarise(layout: dict, rows: list[dict]) -> list[dict]:
    """One entry per variant x dataset: mean/std over the seeds that finished (and the paper's value)."""
    out = []
    for v in layout["variants"]:
        for d in layout["datasets"]:
            group = [r for r in rows if r["variant"] == v["name"] and r["dataset"] == d["name"]]
            values = [r["value"] for r in group if r["value"] is not None]
            extra = {}
            for m in layout.get("metrics", []):
                extra[f"{m}_mean"], extra[f"{m}_std"] = _mean_std([r["extra"].get(m) for r in group])
                extra[f"{m}_paper"] = v.get("paper", {}).get(f"{d['name']}:{m}")
            out.append({
                "variant": v["name"], "variant_label": v["label"], "dataset": d["name"], "dataset_label": d["label"],
                "metric": d.get("metric", layout["metric"]), "mean": mean(values) if values else None,
                "paper": v.get("paper", {}).get(d["name"]), **extra,
                "std": stdev(values) if len(values) > 1 else (0.0 if values else None),
                "seeds_done": len(values), "seeds": len(group),
                "epochs_to_converge": _avg([r["epochs"] for r in group]),
                "trainable_pct": _avg([r["trainable_pct"] for r in group]),
                "trainable_pct_with_head": _avg([r["trainable_pct_with_head"] for r in group]),
                "gflops": _avg([r["gflops"] for r in group]),
                **_views_columns(group),
                "run_ids": ";".join(r["run_id"] for r in group if r["run_id"]),
            })
    return out


def _views_columns(group: list[dict]) -> dict:
    """Mean/std over seeds of the best checkpoint with one view and with the campaign's eval_views."""
    out = {}
    for key in ("best", "views"):
        out[f"{key}_mean"], out[f"{key}_std"] = _mean_std([r.get(key) for r in group])
    return out


def _num(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _scale(metric: str) -> float:
    return 100.0 if metric.endswith(PERCENT_METRICS) else 1.0


def _measured(m: float | None, sd: float | None, metric: str) -> str:
    if m is None:
        return "–"
    k = _scale(metric)
    digits = 1 if k == 100.0 else 3
    return f"{m * k:.{digits}f} ± {sd * k:.{digits}f}"


def markdown(layout: dict, summary: list[dict]) -> str:
    datasets, extras = layout["datasets"], layout.get("metrics", [])
    views = layout.get("eval_views", "")
    head = ["Method", "Trainable %", "Trainable % (with head)", "GFLOPs"]
    for d in datasets:
        metric = d.get("metric", layout["metric"])
        unit = " (%)" if _scale(metric) == 100.0 else ""
        head += [f"{d['label']} {metric}{unit}", f"{d['label']} paper", f"{d['label']} epochs"]
        if views:
            head += [f"{d['label']} best, 1 view{unit}", f"{d['label']} best, {views} views{unit}"]
        for m in extras:
            head += [f"{d['label']} {m}{' (%)' if _scale(m) == 100.0 else ''}", f"{d['label']} {m} paper"]
    seeds = layout["seeds"]
    views_note = (f"; best, 1 view / best, {views} views = the best checkpoint on the validation split with the "
                  f"cell's own views (one clip x one crop unless it sets data.eval_clips/eval_crops) and with "
                  f"{views} (clips x crops, the papers' test protocol)") if views else ""
    lines = [f"**{layout['name']}**: each column's metric at the last epoch, mean ± std over seeds {seeds}; "
             f"paper = the value the paper reports for the row; epochs = first epoch within {CONVERGED:g} "
             f"of the run's best value (mean over seeds); trainable % = adapters only (the papers' column)"
             f"{views_note}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in layout["variants"]:
        cells = [s for s in summary if s["variant"] == v["name"]]
        # trainable % and GFLOPs belong to the method, but side modalities or class counts can make
        # them differ per dataset: then each dataset's value is shown
        pct = sorted({_num(s["trainable_pct"], 2) for s in cells})
        pct_head = sorted({_num(s["trainable_pct_with_head"], 2) for s in cells})
        flops = sorted({_num(s["gflops"], 3) for s in cells})
        row = [v["label"], " / ".join(pct), " / ".join(pct_head), " / ".join(flops)]
        for s in cells:
            text = _measured(s["mean"], s["std"], s["metric"])
            if s["mean"] is not None and s["seeds_done"] < s["seeds"]:
                text += f" ({s['seeds_done']}/{s['seeds']} seeds)"
            row += [text, "–" if s["paper"] is None else f"{s['paper']:g}",
                    _num(s["epochs_to_converge"], 1) if s["mean"] is not None else "–"]
            if views:
                row += [_measured(s["best_mean"], s["best_std"], s["metric"]),
                        _measured(s["views_mean"], s["views_std"], s["metric"])]
            for m in extras:
                paper = s.get(f"{m}_paper")
                row += [_measured(s.get(f"{m}_mean"), s.get(f"{m}_std"), m), "–" if paper is None else f"{paper:g}"]
        lines.append("| " + " | ".join(row) + " |")
    for r in layout.get("references", []):
        row = [f"{r['label']} ({r['note']})", "–", "–", "–"]
        for d in datasets:
            paper = r["paper"].get(d["name"])
            row += ["–", "–" if paper is None else f"{paper:g}", "–"] + ["–", "–"] * bool(views)
            for m in extras:
                paper = r["paper"].get(f"{d['name']}:{m}")
                row += ["–", "–" if paper is None else f"{paper:g}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(layout: dict, summary: list[dict], path: Path) -> None:
    """Grouped bars: one group per dataset, one bar per variant, std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets, variants = layout["datasets"], layout["variants"]
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(datasets) * max(1, len(variants) / 2)), 3.6))
    for i, v in enumerate(variants):
        cells = [next(s for s in summary if s["variant"] == v["name"] and s["dataset"] == d["name"]) for d in datasets]
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(datasets))]
        # a cell without finished runs is a gap (NaN), not a zero bar
        ax.bar(xs, [math.nan if s["mean"] is None else s["mean"] * _scale(s["metric"]) for s in cells], width,
               yerr=[math.nan if s["std"] is None else s["std"] * _scale(s["metric"]) for s in cells], capsize=3,
               label=v["label"])
    ax.set_xticks(range(len(datasets)), [f"{d['label']}\n{d.get('metric', layout['metric'])}" for d in datasets])
    ax.set_ylabel("metric (% for accuracies and mAP)")
    ax.set_title(f"{layout['name']} (mean ± std over {len(layout['seeds'])} seed(s))")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_report(uri: str, name: str, out_dir: str | Path, experiment: str = "") -> dict[str, str]:
    """Query MLflow, write OUT/report.{md,csv,png}; returns their paths."""
    layout, rows = collect(uri, name, experiment)
    summary = summarise(layout, rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "plot": out / "report.png"}
    paths["markdown"].write_text(markdown(layout, summary))
    fields = ["variant", "dataset", "metric", "mean", "std", "paper", "seeds_done", "seeds", "epochs_to_converge",
              "trainable_pct", "trainable_pct_with_head", "gflops", "run_ids"]
    fields += [f"{m}_{k}" for m in layout.get("metrics", []) for k in ("mean", "std", "paper")]
    if layout.get("eval_views"):
        fields += ["best_mean", "best_std", "views_mean", "views_std"]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summary)
    plot(layout, summary, paths["plot"])
    return {k: str(v) for k, v in paths.items()}
