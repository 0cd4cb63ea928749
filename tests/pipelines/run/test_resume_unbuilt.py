"""--resume of a checkpoint saved when a CAA or an MMCA still built its one-token attention parts: the weights
would load (those tensors skipped), but the optimizer state has their slots, so the driver refuses with
one line saying what to do instead. The same checkpoint without them resumes."""

from __future__ import annotations

import pytest
import torch

from components.checkpoint import save_weights, trainable_state_dict
from components.config import ConfigError, from_dict, to_dict
from components.model import build_model
from pipelines.config import ExperimentConfig
from pipelines.run.checkpoints import WEIGHTS
from pipelines.run.preflight import check_resume
from tests.conftest import TINY_VIT


@pytest.mark.parametrize("adapter", [{"type": "caa", "values": "modality"}, {"type": "mmca"}], ids=["caa", "mmca"])
def test_resume_refuses_a_checkpoint_with_unbuilt_parts(adapter, tmp_path):
    cfg = from_dict(ExperimentConfig, {"model": {
        "backbone": TINY_VIT, "head": {"num_outputs": 3}, "modalities": [{"name": "audio", "dim": 6}],
        "adapters": [{"sites": ["block"], "layers": [-1], "modalities": ["audio"], "bottleneck": 8, **adapter}]}})
    model = build_model(cfg.model, 3)
    state = trainable_state_dict(model)
    save_weights(tmp_path / WEIGHTS, state, to_dict(cfg.model))
    check_resume(cfg, None, str(tmp_path))  # as this version saves it: fine
    (name, layer), = [(n, m) for n, m in model.named_modules() if getattr(m, "unbuilt_keys", ())]
    state[f"{name}.{layer.unbuilt_keys[0]}"] = torch.zeros(8)
    save_weights(tmp_path / WEIGHTS, state, to_dict(cfg.model))
    with pytest.raises(ConfigError, match=r"--resume: .* holds 1 tensor\(s\) of parts this version does not build"):
        check_resume(cfg, None, str(tmp_path))
