"""The ``openclip_vit`` family on a tiny random-init CLIP: offline build, pinned open_clip layout,
residual taps, spec sites, local weights, and the generic classifier with adapters (identity at init)."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock
from safetensors.torch import save_file
from torch import nn

from components.adapters.inject import resolve_module
from components.adapters.wrapper import AdaptedModule
from components.backbones.config import BackboneConfig
from components.backbones.openclip_vit import (
    OpenClipFrameViT,
    TappedResidualAttentionBlock,
    create_openclip,
    describe_openclip_text,
)
from components.config import ConfigError, from_dict
from components.model import ModelConfig, build_model

T, S = 4, 32
TINY = {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": S, "num_frames": T}


def tiny(**overrides) -> BackboneConfig:
    return from_dict(BackboneConfig, {**TINY, **overrides})


def test_tiny_model_builds_offline_and_layout_is_pinned(monkeypatch):
    def no_download(*args, **kwargs):  # any hub access would go through these
        raise AssertionError("tried to download")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", no_download)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", no_download)
    assert "vidpeft-tiny-clip" in open_clip.list_models()
    clip = create_openclip(tiny())
    for tower in (clip.visual.transformer, clip.transformer):
        assert tower.batch_first
        for block in tower.resblocks:
            # the layout this family (and its specs) relies on, as of open_clip 3.3
            assert isinstance(block, TappedResidualAttentionBlock) and isinstance(block, ResidualAttentionBlock)
            assert isinstance(block.attn, nn.MultiheadAttention) and block.attn.batch_first
            assert isinstance(block.mlp.c_fc, nn.Linear) and isinstance(block.mlp.c_proj, nn.Linear)
            assert isinstance(block.pre_attn, nn.Identity) and isinstance(block.pre_mlp, nn.Identity)
    assert tuple(clip.visual.grid_size) == (S // 8, S // 8)
    assert not any(k.endswith(("pre_attn", "pre_mlp")) for k in clip.state_dict())  # taps hold no weights


def test_taps_leave_open_clip_blocks_unchanged():
    torch.manual_seed(0)
    clip = create_openclip(tiny())
    block = clip.transformer.resblocks[0]
    x = torch.randn(3, 7, 32)
    mask = clip.attn_mask[:7, :7]
    assert torch.equal(block(x, attn_mask=mask), ResidualAttentionBlock.forward(block, x, attn_mask=mask))
    # the positional call open_clip uses under gradient checkpointing
    assert torch.equal(block(x, None, None, mask), ResidualAttentionBlock.forward(block, x, attn_mask=mask))
    frames = torch.randn(2, 3, S, S)
    expected = clip.encode_image(frames)
    clip.visual.set_grad_checkpointing(True)
    assert torch.allclose(clip.encode_image(frames), expected, atol=1e-6)


def test_cross_attention_path_uses_other_sequence_as_keys():
    torch.manual_seed(0)
    block = create_openclip(tiny()).transformer.resblocks[-1]
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 3, 32)
    a = block.attn(block.ln_1(q), block.ln_1(kv), block.ln_1(kv), need_weights=False)[0]
    x = q + a
    expected = x + block.mlp(block.ln_2(x))
    assert torch.allclose(block(q, kv), expected, atol=1e-6)


def test_spec_sites_resolve():
    backbone = OpenClipFrameViT(tiny())
    spec = backbone.spec
    assert spec.family == "openclip_vit" and len(spec.blocks) == 2 and spec.feature_dim == 32
    assert spec.block_dims == [32, 32] and spec.block_heads == [2, 2]
    layout = spec.layouts[0]
    assert layout.kind == "frames" and layout.grid == (4, 4) and layout.num_prefix_tokens == 1
    assert spec.total_params == sum(p.numel() for p in backbone.visual.parameters())
    expected = {"block": TappedResidualAttentionBlock, "attn": nn.MultiheadAttention, "mlp": nn.Sequential,
                "pre_attn": nn.Identity, "pre_mlp": nn.Identity}
    for block in spec.blocks:
        for site, path in spec.sites.items():
            module = resolve_module(backbone, ".".join(p for p in (block, path) if p))
            assert isinstance(module, expected[site]), (block, site)
    clip = create_openclip(tiny())
    text_spec = describe_openclip_text(clip.transformer, "", 32, 0)  # blocks relative to the CLIP model
    for block in text_spec.blocks:
        assert isinstance(resolve_module(clip, f"{block}.pre_mlp"), nn.Identity)


def test_features_are_projected_class_tokens_averaged_over_time():
    torch.manual_seed(0)
    backbone = OpenClipFrameViT(tiny())
    video = torch.randn(2, T, 3, S, S)
    per_frame = torch.stack([backbone.visual(video[:, t]) for t in range(T)], dim=1)
    assert torch.allclose(backbone.frame_features(video), per_frame, atol=1e-5)
    assert torch.allclose(backbone(video), per_frame.mean(dim=1), atol=1e-5)
    assert OpenClipFrameViT(tiny(pool="mean"))(video).shape == (2, 32)
    concat = OpenClipFrameViT(tiny(temporal="concat"))
    assert concat(video).shape == (2, T * 32) and concat.spec.feature_dim == T * 32


def test_local_checkpoint_loads_and_resamples_positions(tmp_path):
    torch.manual_seed(1)
    source = open_clip.create_model("vidpeft-tiny-clip", pretrained_image=False, pretrained_text=False)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_openclip(tiny(checkpoint=str(path)))
    assert torch.equal(loaded.visual.conv1.weight, source.visual.conv1.weight)
    assert torch.equal(loaded.token_embedding.weight, source.token_embedding.weight)
    bigger = create_openclip(tiny(checkpoint=str(path), img_size=48))  # 6x6 grid from a 4x4 one
    assert bigger.visual.positional_embedding.shape == (1 + 36, 32)
    with pytest.raises(FileNotFoundError):
        create_openclip(tiny(checkpoint=str(tmp_path / "missing.safetensors")))
    with pytest.raises(ConfigError):
        create_openclip(tiny(name="hf-hub:timm/vit_base_patch16_clip_224.openai"))


def _classifier(adapters: list, seed: int = 0):
    torch.manual_seed(seed)
    cfg = from_dict(ModelConfig, {"kind": "classifier", "backbone": TINY, "adapters": adapters})
    return build_model(cfg, num_outputs=5)


def test_classifier_with_bottleneck_adapters_is_identity_at_init():
    adapters = [{"type": "bottleneck", "sites": ["attn", "mlp"], "bottleneck": 8},
                {"type": "ted", "sites": ["pre_attn"], "bottleneck": 8}]
    frozen, adapted = _classifier([]), _classifier(adapters)
    video = torch.randint(0, 256, (2, T, S, S, 3), dtype=torch.uint8)
    with torch.no_grad():
        base, out = frozen.features(video), adapted.features(video)
    assert torch.equal(base, out)
    wrapped = [m for m in adapted.modules() if isinstance(m, AdaptedModule)]
    assert len(wrapped) == 6  # 2 blocks x (attn, mlp, pre_attn)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters." in n or n.startswith("head.") for n in trainable)
    # the adapters are really in the path: perturbing one changes the features (random, not constant:
    # a per-token constant added to the residual stream is erased by the LayerNorms)
    with torch.no_grad():
        adapted.backbone.visual.transformer.resblocks[0].mlp.adapters["bottleneck"].up.weight.normal_(0, 0.1)
        assert not torch.allclose(adapted.features(video), base)
    out = adapted({"video": video, "target": torch.tensor([1, 3])})
    assert out["logits"].shape == (2, 5) and torch.isfinite(out["loss"])


def test_building_without_a_checkpoint_prints_no_random_init_warning(capfd, caplog):
    """open_clip warns "No pretrained weights loaded ... initialized randomly" about its own download
    switch, which vidpeft never uses; runs built from a run's weights file printed it three times."""
    caplog.set_level("WARNING")
    create_openclip(tiny())
    printed = "".join(capfd.readouterr()) + caplog.text
    assert "initialized randomly" not in printed and "No pretrained weights" not in printed
