"""Adapter widths relative to the block width (``bottleneck: 0.25x``), and the note when adapters
outgrow the backbone they adapt."""

from __future__ import annotations

import pytest

from components.adapters.base import check_width, scaled_width
from components.config import ConfigError, from_dict
from components.model import ModelConfig, build_model
from components.param_counts import adapter_parameters, oversize_note

VIT = {"family": "timm_vit", "name": "vit_tiny_patch16_224", "img_size": 32, "num_frames": 2,
       "kwargs": {"patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 2}}


def build(adapters, backbone=VIT):
    return build_model(from_dict(ModelConfig, {"backbone": backbone, "finetune": "adapters", "adapters": adapters}), 3)


def test_a_ratio_is_a_share_of_the_width_at_each_site():
    assert scaled_width("0.25x", 64) == 16 and scaled_width("0.125x", 512) == 64 and scaled_width(32, 999) == 32
    assert scaled_width("0.001x", 64) == 1 and scaled_width(".5x", 10) == 5
    m = build([{"type": "mhva", "sites": ["mlp"], "heads": 2, "bottleneck": "0.25x"},
               {"type": "prefix", "sites": ["attn"], "prefix_length": 4, "hidden": "0.5x"},
               {"type": "bottleneck", "sites": ["attn"], "bottleneck": "1.5x"}])
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert any(n.endswith("mhva.down_weight") and s[-1] == 16 for n, s in shapes.items())
    assert any(n.endswith("prefix.mlp.0.weight") and s == (32, 64) for n, s in shapes.items())
    assert any(n.endswith("bottleneck.down.weight") and s == (96, 64) for n, s in shapes.items())


def test_on_video_swin_a_ratio_follows_each_stage():
    swin = {"family": "video_swin", "name": "swin3d_t", "img_size": 32, "num_frames": 4,
            "kwargs": {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": [2, 4, 4]}}
    m = build([{"type": "bottleneck", "sites": ["mlp"], "bottleneck": "0.5x"}], swin)
    widths = sorted({tuple(p.shape) for n, p in m.named_parameters() if n.endswith("bottleneck.down.weight")})
    assert widths == [(8, 16), (16, 32)]  # stage widths 16 and 32


@pytest.mark.parametrize("bad", ["0x", "x", "0.25", "-1x", "a quarter", 0, -4])
def test_bad_widths_name_the_key(bad):
    with pytest.raises(ValueError, match="bottleneck"):
        check_width(bad, "bottleneck")
    with pytest.raises(ConfigError, match=r"adapters\.0: bottleneck"):
        from_dict(ModelConfig, {"adapters": [{"type": "mhva", "bottleneck": bad}]})


def test_adapters_larger_than_the_backbone_are_said_in_one_line():
    small = build([{"type": "mhva", "sites": ["mlp"], "heads": 2, "bottleneck": "0.125x"}])
    assert oversize_note(small) == ""
    big = build([{"type": "mhva", "sites": ["mlp"], "heads": 4, "bottleneck": 256},
                 {"type": "prefix", "sites": ["attn"], "prefix_length": 16, "hidden": 512}])
    note = oversize_note(big)
    assert "\n" not in note and f"{adapter_parameters(big):,}" in note and "more than the backbone itself" in note
    assert "0.125x" in note  # what to do about it
