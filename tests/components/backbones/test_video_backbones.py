"""Video Swin and ViViT families: spec matches the modules, local checkpoints load, accounting."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from components.adapters.inject import resolve_module
from components.backbones import BackboneConfig, build_backbone
from components.config import from_dict
from components.flops import accounting
from components.model import ModelConfig, build_model
from tests.components.adapters.test_adapter_matrix import BACKBONES


def config(name: str, **extra) -> BackboneConfig:
    return from_dict(BackboneConfig, {**BACKBONES[name], **extra})


def clip(b=2):
    return torch.randn(b, 4, 3, 32, 32)


def test_video_swin_spec_describes_the_nested_stages():
    bb = build_backbone(config("video_swin"))
    spec = bb.spec
    assert spec.blocks == ["swin.features.0.0", "swin.features.0.1", "swin.features.2.0"]
    assert spec.block_dims == [16, 16, 32] and spec.block_heads == [1, 1, 2]
    for path, dim in zip(spec.blocks, spec.block_dims):
        block = resolve_module(bb, path)
        assert block.attn.qkv.in_features == dim
        assert resolve_module(bb, f"{path}.{spec.sites['mlp']}") is block.mlp
    assert all(layout.kind == "swin" and layout.window == (2, 4, 4) for layout in spec.layouts)
    assert bb(clip()).shape == (2, spec.feature_dim) == (2, 32)
    assert spec.total_params == sum(p.numel() for p in bb.parameters())


def test_video_swin_default_variants_match_torchvision():
    from torchvision.models.video import swin3d_t

    from components.backbones.video_swin import VARIANTS

    with torch.device("meta"):  # shapes only: no memory, no init cost
        ours = build_backbone(from_dict(BackboneConfig, {"family": "video_swin", "name": "swin3d_t"})).swin
        theirs = swin3d_t()
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items() if not k.startswith("head")}  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    assert set(VARIANTS) == {"swin3d_t", "swin3d_s", "swin3d_b"}


def test_video_swin_loads_a_torchvision_state_dict(tmp_path):
    torch.manual_seed(0)
    src = build_backbone(config("video_swin"))
    state = {k: v.clone() for k, v in src.swin.state_dict().items()}
    state["head.weight"], state["head.bias"] = torch.randn(400, 32), torch.randn(400)  # K400 head: dropped
    torch.save(state, tmp_path / "swin3d.pth")
    torch.manual_seed(1)
    dst = build_backbone(config("video_swin", checkpoint=str(tmp_path / "swin3d.pth")))
    x = clip()
    with torch.no_grad():
        assert torch.equal(src.eval()(x), dst.eval()(x))
    del state["features.0.0.attn.qkv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="missing"):
        build_backbone(config("video_swin", checkpoint=str(tmp_path / "broken.pth")))


def test_vivit_spec_lists_spatial_then_temporal_blocks():
    bb = build_backbone(config("vivit"))
    spec = bb.spec
    assert spec.blocks == ["spatial.blocks.0", "spatial.blocks.1", "temporal.blocks.0"]
    assert [layout.kind for layout in spec.layouts] == ["frames", "frames", "sequence"]
    assert spec.layouts[0].grid == (4, 4) and spec.layouts[2].num_prefix_tokens == 1
    assert bb(clip()).shape == (2, 32)
    with pytest.raises(ValueError, match="built for 4"):
        bb(torch.randn(1, 3, 3, 32, 32))


def test_vivit_loads_full_and_spatial_only_checkpoints(tmp_path):
    torch.manual_seed(0)
    src = build_backbone(config("vivit")).eval()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "vivit.safetensors"))
    torch.manual_seed(1)
    full = build_backbone(config("vivit", checkpoint=str(tmp_path / "vivit.safetensors"))).eval()
    x = clip()
    with torch.no_grad():
        assert torch.equal(src(x), full(x))
    # an image ViT's weights initialise the spatial transformer only
    save_file({k: v.contiguous() for k, v in src.spatial.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    torch.manual_seed(2)
    spatial = build_backbone(config("vivit", checkpoint=str(tmp_path / "vit.safetensors")))
    assert all(torch.equal(v, src.spatial.state_dict()[k]) for k, v in spatial.spatial.state_dict().items())


def test_vivit_adapters_can_target_the_temporal_transformer_only():
    cfg = from_dict(ModelConfig, {"backbone": BACKBONES["vivit"],
                                  "adapters": [{"type": "mhva", "heads": 2, "bottleneck": 4, "layers": [-1]}]})
    model = build_model(cfg, 3)
    names = {n for n, _ in model.named_parameters() if ".adapters." in n}
    assert names and all(n.startswith("backbone.temporal.blocks.0.") for n in names)


def test_accounting_gflops_and_trainable_share():
    cfg = from_dict(ModelConfig, {"backbone": BACKBONES["video_swin"],
                                  "modalities": [{"name": "audio", "dim": 6}],
                                  "adapters": [{"type": "mhva", "heads": 4, "bottleneck": 8},
                                               {"type": "caa", "modalities": ["audio"], "bottleneck": 8}]})
    model = build_model(cfg, 3)
    plain = build_model(from_dict(ModelConfig, {"backbone": BACKBONES["video_swin"]}), 3)
    acc, base = accounting(model), accounting(plain)
    assert 0 < base["gflops"] < acc["gflops"] and acc["gmacs"] == pytest.approx(acc["gflops"] / 2)
    assert 0 < acc["trainable_pct"] and acc["backbone_params"] == plain.spec.total_params
    assert model.training  # mode restored
