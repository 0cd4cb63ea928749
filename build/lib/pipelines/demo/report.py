"""The demo's closing report, for every recipe: a table against chance, demo_summary.json, a PNG of the
validation curves, and the next commands to try. A recipe describes itself in a ``ReportSpec``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

LABELS = {"linear_probe": "linear probe (head only)", "adapters_frames": "MHVA+PT, frames only",
          "adapters_side": "MHVA+PT + CAA (side feature)"}


@dataclass
class Column:
    """One metric of the table: the runs' metrics.json key, its header and its chance level."""

    key: str
    header: str
    chance: float


@dataclass
class ReportSpec:
    labels: dict[str, str]  # run name -> table row label, in table order
    headline: str  # what the table measures, printed above it
    title: str  # the plot's title
    columns: list[Column]
    next_commands: list[str] = field(default_factory=list)  # "name: command" lines, MLflow UI added after
    summary_extra: dict = field(default_factory=dict)  # more top-level keys of demo_summary.json


def _curve(metrics: dict, key: str = "val_top1") -> list[tuple[int, float]]:
    """Per-epoch values from the run's MLflow history ([] when tracking was off or is unreachable)."""
    uri, run_id = metrics.get("tracking_uri"), metrics.get("run_id")
    if not (uri and run_id):
        return []
    from pipelines.runtime.tracking import client

    try:
        history = client(uri).get_metric_history(run_id, key)
    except Exception:  # the plot is a convenience: a missing store must not fail the demo
        return []
    return sorted((m.step, m.value) for m in history)


def _plot(path: Path, spec: ReportSpec, curves: dict[str, list[tuple[int, float]]],
          finals: dict[str, dict[str, float]]) -> Path | None:
    """Validation top-1 per epoch per run; other columns' final values as markers at the last epoch."""
    if not any(curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    styles = ("--", ":", "-.")
    for i, col in enumerate(spec.columns):
        what = "chance" if len(spec.columns) == 1 else f"{col.header} chance"
        ax.axhline(col.chance, color="grey", linestyle=styles[i % 3], label=f"{what} ({col.chance:.3f})")
    for name, points in curves.items():
        if not points:
            continue
        line, = ax.plot([s + 1 for s, _ in points], [v for _, v in points], marker="o", label=spec.labels[name])
        for col in spec.columns[1:]:  # e.g. zero-shot: one number at the end of the run
            value = finals[name].get(col.key)
            if value is not None:
                ax.plot([points[-1][0] + 1], [value], marker="*", markersize=14, color=line.get_color(),
                        linestyle="none", label=f"{spec.labels[name]}: {col.header}")
    ax.set(xlabel="epoch", ylabel="top-1", ylim=(0, 1), title=spec.title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _table(spec: ReportSpec, runs: dict[str, dict]) -> None:
    width = max(len(v) for v in spec.labels.values())
    head = "".join(f"  {c.header:>{max(len(c.header), 9)}}  {'x chance':>8}" for c in spec.columns)
    print(f"{'':<{width}}{head}  {'trainable %':>11}")
    for name, r in runs.items():
        cells = ""
        for c in spec.columns:
            w, value = max(len(c.header), 9), r.get(c.key)
            cells += f"  {value:{w}.3f}  {value / c.chance:8.1f}" if value is not None else f"  {'-':>{w}}  {'-':>8}"
        pct = r["trainable_pct"]
        print(f"{spec.labels[name]:<{width}}{cells}  {'-' if pct is None else f'{pct:.2f}':>11}")
    print("trainable %: adapter parameters as a share of the backbone's (heads not counted, as in the papers)")


def report(out_dir: Path, results: dict[str, dict], seconds: float, spec: ReportSpec) -> dict:
    """Write ``out_dir``/demo_summary.json and demo_curves.png, print the table and the next commands.
    The summary's ``chance`` is the first column's; each run carries every column's key."""
    keys = [c.key for c in spec.columns]
    runs = {name: {**{k: m.get(k) for k in keys}, "trainable_pct": m.get("trainable_pct"),
                   "output_dir": m.get("output_dir"), "run_id": m.get("run_id")} for name, m in results.items()}
    summary = {"chance": spec.columns[0].chance, **spec.summary_extra, "runs": runs, "seconds": round(seconds, 1)}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "demo_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out_dir / "demo_summary.json")
    curves = {n: _curve(m, spec.columns[0].key) for n, m in results.items()}
    png = _plot(out_dir / "demo_curves.png", spec, curves, runs)

    print(f"\n{spec.headline}")
    _table(spec, runs)
    print(f"\nsummary: {out_dir / 'demo_summary.json'}" + (f"\ncurves:  {png}" if png else ""))
    print(f"took {seconds / 60:.1f} min\n" if seconds >= 60 else f"took {seconds:.0f} s\n")

    uri = next((m.get("tracking_uri") for m in results.values() if m.get("tracking_uri")), None)
    print("Next:")
    for line in spec.next_commands:
        name, command = line.split(": ", 1)
        print(f"  {name + ':':<10} {command}")
    if uri:
        print(f"  MLflow UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1   (then open http://127.0.0.1:5000)")
    return summary
