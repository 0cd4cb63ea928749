"""The demo's parts on their own: the source/target scene kinds and the backbone-only export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from components.adapters.unwrap import native_backbone_state
from components.config import from_dict
from components.data.manifest import read_manifest
from components.data.synth import make_synthetic_dataset
from components.data.synth_scenes import COLOURS, TASKS, render_appearance, render_motion_texture
from components.model import ModelConfig, build_model
from tests.conftest import TINY_VIT


def _centre_of(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(y, x) centroid of the pixels of exactly ``colour`` (the shapes; the texture never has it)."""
    return np.argwhere((frame == np.array(colour, dtype=np.uint8)).all(-1)).mean(0)


@pytest.mark.parametrize("label", range(8))
def test_motion_texture_moves_in_the_class_direction(label):
    clip, speed, caption = render_motion_texture(np.random.default_rng(label), label, 8, frames=8, size=64,
                                                 shapes=(1, 1))
    assert clip.shape == (8, 64, 64, 3) and clip.dtype == np.uint8 and speed > 0
    colour = COLOURS[caption.split()[1]]  # "a red disc moving ..."
    moved = _centre_of(clip[-1], colour) - _centre_of(clip[0], colour)  # (dy, dx), y points down
    angle = math.atan2(moved[0], moved[1]) % (2 * math.pi)
    expected = 2 * math.pi * label / 8
    assert abs((angle - expected + math.pi) % (2 * math.pi) - math.pi) < math.pi / 8
    assert "moving" in caption


def test_appearance_is_static_and_labelled_by_shape_and_size():
    small, _, cap_small = render_appearance(np.random.default_rng(0), 0, 4, frames=3, size=32)
    large, _, cap_large = render_appearance(np.random.default_rng(0), 1, 4, frames=3, size=32)
    assert np.array_equal(small[0], small[-1])  # nothing moves
    assert (large[0].min(-1) >= 200).sum() > 2 * (small[0].min(-1) >= 200).sum()
    assert cap_small == "a small white disc" and cap_large == "a large white disc"


def test_task_kinds_write_manifests_with_captions(tmp_path):
    for task in TASKS:
        m = read_manifest(make_synthetic_dataset(tmp_path / task, task=task, num_classes=4, clips_per_class=2,
                                                 frames=4, size=32, feature_dim=0))
        rows = m.table.to_pylist()
        k = len(TASKS[task][1](4))  # appearance and compositions have fixed class sets
        assert len(rows) == 2 * k and all(r["caption"] for r in rows)
        assert m.num_classes == k and {r["label"] for r in rows} == set(range(k))
    with pytest.raises(ValueError, match="task must be one of"):
        make_synthetic_dataset(tmp_path / "x", task="colour")


def test_backbone_export_is_timm_native_and_drops_adapters():
    cfg = from_dict(ModelConfig, {"backbone": TINY_VIT, "finetune": "full", "adapters": [
        {"type": "bottleneck", "sites": ["attn", "mlp"], "bottleneck": 4},
        {"type": "prefix", "sites": ["attn"], "prefix_length": 2, "hidden": 8}]})
    model = build_model(cfg, 3)
    with torch.no_grad():  # a fine-tuned backbone: every frozen weight moved
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    state = native_backbone_state(model.backbone)
    plain = timm.create_model(TINY_VIT["name"], pretrained=False, num_classes=0, img_size=TINY_VIT["img_size"],
                              **TINY_VIT["kwargs"])
    plain.load_state_dict(state, strict=True)  # exactly timm's keys, nothing more or less
    assert not any("adapters" in k or "base_layer" in k for k in state)
    frames = torch.randn(2, 3, TINY_VIT["img_size"], TINY_VIT["img_size"])
    plain.eval()
    model.eval()
    # with the adapters' output zeroed the adapted model is the exported backbone
    for _, m in model.backbone.named_modules():
        if hasattr(m, "adapters"):
            m.adapters.clear()
    assert torch.allclose(plain.forward_features(frames), model.backbone.vit.forward_features(frames), atol=1e-6)


def test_a_finished_stage_is_reused_only_with_the_same_settings(tmp_path, capsys):
    """`vidpeft demo --set optim.epochs=2` after a finished demo must not report the old runs as its own."""
    import json

    from components.config import ConfigError, dump_yaml, resolve, to_dict
    from pipelines.config import ExperimentConfig
    from pipelines.demo.cm3t import CONFIGS, _train
    from pipelines.run.inputs import prepare_config

    manifest = make_synthetic_dataset(tmp_path / "data", task="appearance", num_classes=4, clips_per_class=4,
                                      frames=2, size=32, seed=0, feature_dim=0)
    out = tmp_path / "runs" / "pretrain"
    fixed = [f"data.manifest={manifest}", f"output_dir={out}"]
    finished = prepare_config(resolve(ExperimentConfig, [CONFIGS / "pretrain.yaml"], fixed))[0]
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(dump_yaml(to_dict(finished)))  # as a finished run leaves it
    (out / "metrics.json").write_text(json.dumps({"val_top1": 0.5}))

    assert _train([CONFIGS / "pretrain.yaml"], fixed, []) == {"val_top1": 0.5}
    assert "finished earlier, reusing" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"pretrain holds this stage finished with other settings "
                                          r"\(optim.epochs: earlier \d+, now 2\).*delete"):
        _train([CONFIGS / "pretrain.yaml"], fixed, ["optim.epochs=2"])
