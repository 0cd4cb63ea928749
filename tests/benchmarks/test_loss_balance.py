"""M2-CLIP's loss balance after the CMC fix (cross-entropy on logits, not on softmax scores): the
measurement behind the m2clip_balanced preset, and the preset agreeing with the recorded measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.loss_balance import TERMS, shares, term_gradients
from components.config import from_dict, load_yaml
from components.model import ModelConfig, build_model

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "pipelines" / "configs" / "presets" / "m2clip"


def test_balanced_weights_give_the_fixed_loss_the_official_gradient_shares():
    data = load_yaml(PRESETS / "m2clip_full.yaml")["model"]
    data["backbone"] = {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32, "num_frames": 2}
    data["adapters"] = [{**a, "bottleneck": 8} for a in data["adapters"]]
    data["m2clip"]["text_adapters"] = [{**a, "bottleneck": 8} for a in data["m2clip"]["text_adapters"]]
    data["m2clip"]["cmlm_adapter_width"] = 8
    names = ["running", "jumping", "swimming", "climbing", "dancing"]
    torch.manual_seed(0)
    model = build_model(from_dict(ModelConfig, data), len(names), names).train()
    batch = {"video": torch.randint(0, 256, (4, 2, 32, 32, 3), dtype=torch.uint8), "target": torch.tensor([0, 1, 2, 3])}
    official = term_gradients(model, batch, official_cmc=True)
    fixed = term_gradients(model, batch, official_cmc=False)
    assert set(official) == set(TERMS)
    # the fix changes the CMC term only, and makes its gradient larger
    for t in ("contrastive", "vc"):
        assert official[t] == pytest.approx(fixed[t], rel=1e-4)
    assert fixed["cmc"]["grad_norm"] > 3 * official["cmc"]["grad_norm"]
    weights = {t: getattr(model.config.m2clip, f"{t}_weight") for t in TERMS}
    assert weights == {"contrastive": 0.5, "cmc": 0.5, "cmlm": 0.1, "vc": 1.0}  # the official weighting
    balanced = {**weights, "cmc": weights["cmc"] * official["cmc"]["grad_norm"] / fixed["cmc"]["grad_norm"]}
    assert shares(fixed, weights)["cmc"] > shares(official, weights)["cmc"]
    for t, share in shares(fixed, balanced).items():
        assert share == pytest.approx(shares(official, weights)[t], rel=1e-3)


def test_balanced_preset_uses_the_recorded_measurement():
    recorded = json.loads((ROOT / "benchmarks" / "results" / "loss_balance.json").read_text())
    preset = load_yaml(PRESETS / "m2clip_balanced.yaml")["model"]["m2clip"]
    full = load_yaml(PRESETS / "m2clip_full.yaml")["model"]["m2clip"]
    assert preset["cmc_weight"] == pytest.approx(recorded["balanced_weights"]["cmc"], rel=0.05)
    for t in ("contrastive", "cmlm", "vc"):
        assert preset[f"{t}_weight"] == full[f"{t}_weight"] == recorded["balanced_weights"][t]
    assert {k: v for k, v in preset.items() if k != "cmc_weight"} == {k: v for k, v in full.items() if k != "cmc_weight"}
