"""`vidpeft demo`: generate the demo dataset if missing, train on it, say where the results are."""

from __future__ import annotations

import os
from pathlib import Path

from components.config import resolve
from pipelines import tracking
from pipelines.config import ExperimentConfig

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def run_demo(workdir: str = ".", overrides: list[str] = ()) -> dict:
    from components.data.synth import make_synthetic_dataset
    from pipelines.train import run_train

    work = Path(workdir).absolute()
    data_dir = work / "demo_data"
    manifest = data_dir / "manifest.parquet"
    if not manifest.exists():
        print(f"[vidpeft] writing the demo dataset to {data_dir} ...", flush=True)
        make_synthetic_dataset(data_dir, num_classes=4, clips_per_class=32, frames=8, size=32, seed=0,
                               progress=True)
    # The demo's paths are fixed under workdir; --set overrides still win.
    fixed = [f"data.manifest={manifest}", f"output_dir={work / 'runs' / 'demo'}"]
    if not os.environ.get(tracking.ENV_URI):  # the local store lives in the workdir, like the rest
        fixed.append(f"tracking.tracking_uri={tracking.resolve_tracking_uri('', work)}")
    cfg = resolve(ExperimentConfig, [DEMO_CONFIG], [*fixed, *overrides])
    out = Path(cfg.output_dir)
    resume = (out / "run_info.json").exists()
    if resume:
        print(f"[vidpeft] {out} has an earlier demo run: continuing it (delete the folder to start over)")
    metrics = run_train(cfg, resume=resume)
    uri = metrics.get("tracking_uri") or ""
    print("\nDemo finished.")
    print(f"  results:      {out}/metrics.json, weights in {out}/weights.safetensors")
    if uri:
        print(f"  MLflow UI:    mlflow ui --backend-store-uri {uri} --host 127.0.0.1   (then open http://127.0.0.1:5000)")
    # [after] what to try next. The manifest's rows carry the "audio" side feature the demo model leans on;
    # bare mp4 files have none (README: Using a trained model).
    print(f"  next, predict: vidpeft predict {out} {manifest} --split val --out {work / 'preds.parquet'} --top-k 2")
    return metrics
