"""The closing table a run prints: best and last epoch, its metrics, where its outputs are."""

from __future__ import annotations

from pathlib import Path

from pipelines.data import multi_dataset


def print_summary(metrics: dict, out: Path, run_id: str | None, total: int, datasets: list[str] = ()) -> None:
    keys = [k for k in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
                        "val_mAP",
                        "val_mse", "zeroshot_top1", "zeroshot_top5", "skipped_clips_total", "fallback_clips_total",
                        "clips_per_sec",
                        "trainable_pct", "trainable_pct_with_head") if k in metrics]
    keys += multi_dataset.table_keys(metrics, list(datasets))  # several datasets: each one's headline metric
    # epochs as the progress lines count them (1-based); metrics.json keeps Ray's 0-based indices
    epochs = {label: f"{metrics[k] + 1}/{total}" for label, k in (("best epoch", "best_epoch"), ("last epoch", "last_epoch"))
              if isinstance(metrics.get(k), int)}
    width = max(len(k) for k in [*keys, *epochs]) if keys or epochs else 10
    print("\n" + "-" * (width + 16))
    for label, v in epochs.items():
        print(f"{label:<{width}}  {v:>12}")
    for k in keys:
        v = metrics[k]
        print(f"{k:<{width}}  {v:>12.4f}" if isinstance(v, float) else f"{k:<{width}}  {v:>12}")
    print("-" * (width + 16))
    if metrics.get("checkpoint_metric"):  # [after]
        print(f"best epoch by {metrics['checkpoint_metric']} ({metrics['checkpoint_mode']}): weights.safetensors "
              f"and the metrics above are from epoch {epochs.get('best epoch', '?')}")
    if metrics.get("stop_reason"):
        print(f"stopped: {metrics['stop_reason']}")
    if metrics.get("health"):
        print(f"health: {metrics['health']}")
    print(f"outputs: {out}" + (f"\nMLflow run: {run_id}" if run_id else ""))
