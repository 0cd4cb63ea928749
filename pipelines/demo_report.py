"""The demo's closing report: a table against chance, demo_summary.json, a PNG of the val curves."""

from __future__ import annotations

import json
import os
from pathlib import Path

LABELS = {"linear_probe": "linear probe (head only)", "adapters_frames": "MHVA+PT, frames only",
          "adapters_side": "MHVA+PT + CAA (side feature)"}


def _curve(metrics: dict, key: str = "val_top1") -> list[tuple[int, float]]:
    """Per-epoch values from the run's MLflow history ([] when tracking was off or is unreachable)."""
    uri, run_id = metrics.get("tracking_uri"), metrics.get("run_id")
    if not (uri and run_id):
        return []
    from pipelines.tracking import client

    try:
        history = client(uri).get_metric_history(run_id, key)
    except Exception:  # the plot is a convenience: a missing store must not fail the demo
        return []
    return sorted((m.step, m.value) for m in history)


def _plot(path: Path, curves: dict[str, list[tuple[int, float]]], chance: float) -> Path | None:
    if not any(curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, points in curves.items():
        if points:
            ax.plot([s + 1 for s, _ in points], [v for _, v in points], marker="o", label=LABELS[name])
    ax.axhline(chance, color="grey", linestyle="--", label=f"chance ({chance:.3f})")
    ax.set(xlabel="epoch", ylabel="validation top-1", ylim=(0, 1),
           title="Frozen pretrained ViT on a new video task")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def report(work: Path, results: dict[str, dict], chance: float, seconds: float) -> dict:
    runs = {name: {"val_top1": m.get("val_top1"), "trainable_pct": m.get("trainable_pct"),
                   "output_dir": m.get("output_dir"), "run_id": m.get("run_id")} for name, m in results.items()}
    summary = {"chance": chance, "runs": runs, "seconds": round(seconds, 1)}
    tmp = work / "demo_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, work / "demo_summary.json")
    png = _plot(work / "demo_curves.png", {n: _curve(m) for n, m in results.items()}, chance)

    width = max(len(v) for v in LABELS.values())
    print(f"\nTarget task: direction of motion over texture, {round(1 / chance)} classes (chance {chance:.3f})")
    print(f"{'':<{width}}  {'val top-1':>9}  {'x chance':>8}  {'trainable %':>11}")
    for name, r in runs.items():
        top1, pct = r["val_top1"], r["trainable_pct"]
        cells = (f"{top1:9.3f}  {top1 / chance:8.1f}" if top1 is not None else f"{'-':>9}  {'-':>8}")
        print(f"{LABELS[name]:<{width}}  {cells}  {pct if pct is None else round(pct, 2):>11}")
    print(f"\nsummary: {work / 'demo_summary.json'}" + (f"\ncurves:  {png}" if png else ""))
    print(f"took {seconds / 60:.1f} min\n")

    best = runs["adapters_side"]["output_dir"]
    target = work / "demo_data" / "target"
    uri = next((m.get("tracking_uri") for m in results.values() if m.get("tracking_uri")), None)
    print("Next:")
    # the manifest's rows carry the side feature the CM3T run reads; bare mp4 files have none
    print(f"  predict:   vidpeft predict {best} {target / 'manifest.parquet'} --split val "
          f"--out {work / 'preds.parquet'} --top-k 3")
    print(f"  search:    vidpeft tune --config pipelines/configs/demo/target.yaml "
          f"--config pipelines/configs/demo/adapters_frames.yaml --space tune_spaces/demo_adapters.yaml --trials 4 "
          f"--set data.manifest={target / 'manifest.parquet'} "
          f"--set model.backbone.checkpoint={work / 'runs' / 'demo' / 'backbone.safetensors'}")
    if uri:
        print(f"  MLflow UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1   (then open http://127.0.0.1:5000)")
    return summary
