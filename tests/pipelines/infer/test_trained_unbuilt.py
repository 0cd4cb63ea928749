"""An export (every tensor of the model in one file) written when a CAA or an MMCA still built its
one-token attention parts loads: exactly the names the layer lists in ``unbuilt_keys`` are skipped, the
predictions are the saved model's, and any other unknown tensor is still refused."""

from __future__ import annotations

import re

import pytest
import torch

from components.checkpoint import save_safetensors
from components.config import ConfigError, from_dict
from components.model import build_model
from pipelines.config import ExperimentConfig
from pipelines.infer.trained import Trained, build_trained
from tests.conftest import TINY_VIT


ONE_TOKEN = {"caa": ({"values": "modality"}, "keys.proj.flow"), "mmca": ({}, "inputs.proj.flow")}


@pytest.mark.parametrize("kind", list(ONE_TOKEN))
def test_an_older_export_with_unbuilt_parts_loads(kind, tmp_path):
    extra, stray = ONE_TOKEN[kind]  # stray: a part the layer never leaves out
    cfg = from_dict(ExperimentConfig, {"model": {
        "backbone": TINY_VIT, "head": {"num_outputs": 3}, "modalities": [{"name": "audio", "dim": 6}],
        "adapters": [{"type": kind, "sites": ["block"], "layers": [-1], "modalities": ["audio"], "bottleneck": 8,
                      **extra}]}})
    torch.manual_seed(7)
    model = build_model(cfg.model, 3).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name:
                p.normal_(std=0.3)
    state = dict(model.state_dict())
    (name, layer), = [(n, m) for n, m in model.named_modules() if getattr(m, "unbuilt_keys", ())]
    for key in layer.unbuilt_keys:
        state[f"{name}.{key}"] = torch.randn(8)
    path = save_safetensors(tmp_path / "model.safetensors", state)
    loaded = build_trained(Trained(cfg, ["a", "b", "c"], weights=path, standalone=True))
    data = {"video": torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8), "side_audio": torch.randn(2, 6)}
    with torch.no_grad():
        assert torch.equal(loaded(data)["logits"], model(data)["logits"])
    state[f"{name}.{stray}.weight"] = torch.randn(8)
    save_safetensors(path, state)
    with pytest.raises(ConfigError, match=r"unexpected 1 e\.g\. .*" + re.escape(stray)):
        build_trained(Trained(cfg, ["a", "b", "c"], weights=path, standalone=True))
