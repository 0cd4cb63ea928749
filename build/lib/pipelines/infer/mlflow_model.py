"""The MLflow pyfunc model of `vidpeft export` (models-from-code: MLflow runs this file, unpickles nothing).

Input: a DataFrame with a `video_path` column. Output: the prediction table (pipelines/infer/predict_core.py),
one row per video (or per window with the `window_sec` param); an undecodable video is a row with its
error. The model is the standalone safetensors artifact; vidpeft's source travels in the model's code
paths, so loading needs neither a vidpeft install nor the run directory nor the backbone checkpoint.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class VidpeftVideoModel(PythonModel):
    def load_context(self, context) -> None:
        import torch

        from pipelines.infer.predict_core import Scorer
        from pipelines.infer.trained import load_trained

        config = context.model_config or {}
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.scorer = Scorer(load_trained(context.artifacts["model"]), device, top_k=int(config.get("top_k", 5)))

    # a DataFrame hint: MLflow validates against the logged signature (pipelines/infer/export.py) and stops
    # asking for type hints on every log and load
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from pipelines.infer.predict_core import predict_local

        params = params or {}
        if "top_k" in params:
            self.scorer.top_k = max(1, min(int(params["top_k"]), len(self.scorer.names)))
        paths = [str(p) for p in model_input["video_path"]]
        table = predict_local(self.scorer, paths, float(params.get("window_sec", 0.0)),
                              float(params.get("stride_sec", 0.0)))
        return table.to_pandas()


mlflow.models.set_model(VidpeftVideoModel())
