"""`vidpeft export`: a trained run as one standalone file, and as an MLflow model.

1) `model.safetensors`: every tensor of the model (frozen backbone + adapters + head) and, in the
   metadata, the experiment config and the class / target names (pipelines/infer/trained.py reads it), so
   `vidpeft predict` / `evaluate` take it in place of a run directory, without the backbone checkpoint.
   Adapters stay modules, unless `--merge`: then every adapter whose type declares itself mergeable
   (LoRA) is folded into the frozen weights (pipelines/infer/export_merge.py) and any other one refuses with
   its type's declared reason. `--onnx` also writes model.onnx (pipelines/infer/export_onnx.py).
2) An MLflow pyfunc model (models-from-code: pipelines/infer/mlflow_model.py, no pickle) holding that file and
   vidpeft's own source (code_paths), with a signature: input a `video_path` column, output the
   prediction table of pipelines/infer/predict_core.py. Logged to the run's MLflow run (or a new run when the
   run has none or its store is gone), registered under `--register NAME` when asked.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from importlib import metadata
from pathlib import Path

from components.config import to_dict
from pipelines.runtime import tracking
from pipelines.infer.export_merge import build_merged, merge_report
from pipelines.infer.trained import STANDALONE_KEY, Trained, build_trained, load_trained, run_tracking

EXPORT_FILE = "model.safetensors"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
ROOT = Path(__file__).resolve().parents[2]  # the checkout: pipelines/infer/export.py

REQUIREMENTS = ("torch", "torchvision", "timm", "open_clip_torch", "decord", "av", "einops", "safetensors", "pyarrow",
                "numpy", "pyyaml", "pandas", "mlflow")


def write_standalone(t: Trained, path: Path, model=None) -> Path:
    """The whole model in one safetensors file (written beside, then renamed: never half-written).
    ``model``: an already built model that ``t`` describes (a merged one); default: built from ``t``."""
    from components.checkpoint import save_safetensors

    from components.checkpoint import CONFIG_KEY

    model = model if model is not None else build_trained(t)
    # clone: tied tensors (e.g. a shared projection) become separate entries; loading restores both
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {STANDALONE_KEY: json.dumps({"config": to_dict(t.cfg), "class_names": t.class_names,
                                        "target_names": t.target_names}),
            CONFIG_KEY: json.dumps(to_dict(t.cfg.model), sort_keys=True)}
    return save_safetensors(path, state, meta)


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "video_path")])
    outputs = Schema([ColSpec("string", "clip_id"), ColSpec("string", "video_path"), ColSpec("double", "start_sec"),
                      ColSpec("double", "end_sec"), ColSpec("string", "label"), ColSpec("double", "score"),
                      ColSpec(Array("string"), "top_k_labels"), ColSpec(Array("double"), "top_k_scores"),
                      ColSpec("string", "error")])
    params = ParamSchema([ParamSpec("top_k", "long", 5), ParamSpec("window_sec", "double", 0.0),
                          ParamSpec("stride_sec", "double", 0.0)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


_REGISTRY_LINES = ("Successfully registered model", "Created version", "Registered model")


def log_mlflow_model(t: Trained, standalone: Path, register: str | None = None, top_k: int = 5) -> dict:
    import mlflow

    uri, run_id = run_tracking(t)
    mlflow.set_tracking_uri(uri)
    if register:
        mlflow.set_registry_uri(uri)
    if run_id is None:
        exp = t.cfg.tracking.experiment
        c = tracking.client(uri)
        exp_obj = c.get_experiment_by_name(exp)
        exp_id = exp_obj.experiment_id if exp_obj else c.create_experiment(exp, artifact_location=tracking.artifact_root(uri))
        run_id = c.create_run(exp_id, run_name=f"{t.cfg.name}-export").info.run_id
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars for one model file
    said = io.StringIO()
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings(), contextlib.redirect_stderr(said):
        # MLflow suggests type hints and an input example; the explicit signature below says it all
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(MODEL_CODE), artifacts={"model": str(standalone)},
            code_paths=[str(ROOT / "components"), str(ROOT / "pipelines")], signature=signature(),
            pip_requirements=_requirements(), model_config={"top_k": top_k}, registered_model_name=register or None)
    # the registry's own "Successfully registered model" / "Created version" lines: run_export says both
    sys.stderr.writelines(line for line in said.getvalue().splitlines(keepends=True)
                          if not line.startswith(_REGISTRY_LINES))
    version = getattr(info, "registered_model_version", None)
    return {"tracking_uri": uri, "run_id": run_id, "model_uri": info.model_uri,
            "registered": register or None, "version": version}


def run_export(source: str, out: str, register: str | None = None, backbone_checkpoint: str | None = None,
               mlflow_model: bool = True, top_k: int = 5, merge: bool = False, onnx: bool = False) -> dict:
    t = load_trained(source, backbone_checkpoint)
    model, report = None, merge_report(t)
    if merge or onnx:  # ONNX: merged where possible, the rest kept as modules
        model, t, report = build_merged(t, require_all=merge)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_standalone(t, out_dir / EXPORT_FILE, model)
    size_mb = path.stat().st_size / 2**20
    what = "merged backbone" if merge else "backbone (mergeable adapters merged) + adapters" if onnx else "backbone + adapters"
    print(f"[vidpeft] standalone model: {path} ({size_mb:.1f} MiB; {what} + head, config inside)")
    for line in report:
        print(f"  {line}")
    result = {"file": str(path), "adapters": report, "merged": merge}
    if onnx:
        from pipelines.infer.export_onnx import write_onnx

        result["onnx"] = write_onnx(t, model, out_dir)
    if mlflow_model:
        logged = log_mlflow_model(t, path, register, top_k)
        result.update(logged)
        print(f"[vidpeft] MLflow model: {logged['model_uri']} (run {logged['run_id']}, {logged['tracking_uri']})")
        if register:
            print(f"[vidpeft] registered as {register} version {logged['version']}: load it with "
                  f"mlflow.pyfunc.load_model('models:/{register}/{logged['version']}')")
    tmp = out_dir / "export.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_dir / "export.json")
    return result
