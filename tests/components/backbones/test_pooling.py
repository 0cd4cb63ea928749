"""The shared pooling layer: every pool x temporal x family combination gives the feature width its
spec announces (and the head is built with), or is refused with an error naming the key."""

from __future__ import annotations

import pytest
import torch

from components.backbones import BackboneConfig, build_backbone
from components.config import ConfigError, from_dict
from tests.components.adapters.test_adapter_matrix import BACKBONES, S, T

# width of one frame's pooled token (openclip: after CLIP's projection)
TOKEN_WIDTH = {"timm_vit": 32, "vivit": 32, "video_swin": 32, "videomae": 32, "openclip_vit": None}
REFUSED = {  # (family, pool, temporal) -> the key the error names
    **{("vivit", "grid", t): "model.backbone.pool" for t in ("mean",)},
    **{(f, p, t): "model.backbone.temporal" for f in ("vivit", "video_swin", "videomae")
       for p in ("cls", "mean", "grid") for t in ("concat", "diff")},
    ("videomae", "grid", "mean"): "model.backbone.pool",
}


def build(family, pool, temporal):
    torch.manual_seed(0)
    return build_backbone(from_dict(BackboneConfig, {**BACKBONES[family], "pool": pool, "temporal": temporal}))


@pytest.mark.parametrize("family", sorted(BACKBONES))
@pytest.mark.parametrize("pool", ["cls", "mean", "grid"])
@pytest.mark.parametrize("temporal", ["mean", "concat", "diff"])
def test_feature_width_of_every_combination(family, pool, temporal):
    if (family, pool, temporal) in REFUSED:
        with pytest.raises(ConfigError, match=REFUSED[family, pool, temporal]):
            build(family, pool, temporal)
        return
    bb = build(family, pool, temporal).eval()
    token = TOKEN_WIDTH[family] or bb.visual.output_dim
    cells = 4 if pool == "grid" else 1  # pool_grid 2
    steps = {"mean": 1, "concat": T, "diff": T - 1}[temporal]
    assert bb.spec.feature_dim == token * cells * steps
    with torch.no_grad():
        out = bb(torch.randn(2, T, 3, S, S))
    assert out.shape == (2, bb.spec.feature_dim)


@pytest.mark.parametrize("family", ["timm_vit", "vivit", "openclip_vit"])
def test_cls_and_mean_differ_where_there_is_a_class_token(family):
    video = torch.randn(1, T, 3, S, S)
    with torch.no_grad():
        cls, mean = (build(family, p, "mean").eval()(video) for p in ("cls", "mean"))
    assert not torch.allclose(cls, mean)


def test_frames_in_order_and_their_differences():
    bb = build("timm_vit", "cls", "concat").eval()
    video = torch.randn(1, T, 3, S, S)
    with torch.no_grad():
        frames = bb.pooling.frames(bb.tokens(video))  # (1, T, D)
        diff = build("timm_vit", "cls", "diff").eval()(video)
    torch.testing.assert_close(bb(video), frames.reshape(1, -1))
    torch.testing.assert_close(diff, (frames[:, 1:] - frames[:, :-1]).reshape(1, -1))


def test_a_grid_that_does_not_divide_the_patch_grid_names_pool_grid():
    with pytest.raises(ConfigError, match="model.backbone.pool_grid: 3 does not divide the 4x4 patch grid"):
        build_backbone(from_dict(BackboneConfig, {**BACKBONES["timm_vit"], "pool": "grid", "pool_grid": 3}))
