"""The CM3T presets parse, build on Video Swin-B (shapes only, on the meta device) and train what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.config import from_dict, load_yaml
from components.model import ModelConfig, build_model, parameter_counts

PRESETS = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "presets" / "cm3t"
NAMES = ["mhva_pt", "cm3t", "adaptformer_pt", "full_ft", "full_ft_caa", "mhva_pt_mmca", "linear_probe"]


def build(name: str):
    data = load_yaml(PRESETS / f"{name}.yaml")
    assert set(data) == {"model"}
    model_data = data["model"]
    for m in model_data.get("modalities", []):
        m["dim"] = 1024  # the manifest would supply these
    cfg = from_dict(ModelConfig, model_data)
    with torch.device("meta"):
        return cfg, build_model(cfg, 97)


@pytest.mark.parametrize("name", NAMES)
def test_preset_builds(name):
    cfg, model = build(name)
    assert cfg.backbone.family == "video_swin" and cfg.backbone.name == "swin3d_b"
    counts = parameter_counts(model)
    assert counts["backbone_params"] == pytest.approx(88e6, rel=0.01)  # Video Swin-B
    pct = counts["trainable_pct"]
    expected = {"mhva_pt": (12, 13.5), "cm3t": (16, 19), "mhva_pt_mmca": (16, 19), "adaptformer_pt": (6, 9),
                "full_ft": (100, 101), "full_ft_caa": (105, 108), "linear_probe": (0, 0.2)}[name]
    assert expected[0] < pct < expected[1], pct
