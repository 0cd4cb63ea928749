"""Using a trained run: evaluate, predict, zero-shot, export (safetensors and MLflow model)."""
