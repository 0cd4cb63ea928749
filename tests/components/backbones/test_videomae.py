"""The ``videomae`` family: Hugging Face transformers files and the original release layout load and
reproduce the upstream model; wrong sizes are named; adapters reach its sites (see also the
adapter x backbone table in test_adapter_matrix.py)."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from components.backbones import BackboneConfig, build_backbone
from components.config import from_dict
from components.weights.reader import WeightsError
from components.weights.strict import capture_notes

transformers = pytest.importorskip("transformers", reason="transformers (dev extra) builds the HF VideoMAE files")

SPEC = {"family": "videomae", "name": "videomae_base", "img_size": 32, "num_frames": 4,
        "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}


def build(path=None, **kwargs):
    spec = {**SPEC, "kwargs": {**SPEC["kwargs"], **kwargs}, "checkpoint": str(path) if path else None}
    return build_backbone(from_dict(BackboneConfig, spec)).eval()


def hf_config(**extra):
    return transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
                                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                                       layer_norm_eps=1e-6, num_labels=5, **extra)


def test_hf_classification_file_reproduces_transformers(tmp_path):
    torch.manual_seed(0)
    hf = transformers.VideoMAEForVideoClassification(hf_config()).eval()
    for name, p in hf.named_parameters():  # non-zero biases, so a mixed-up q/k/v order would show
        if name.endswith("bias"):
            torch.nn.init.normal_(p)
    save_file(hf.state_dict(), str(tmp_path / "model.safetensors"))
    with capture_notes() as notes:
        model = build(tmp_path / "model.safetensors")
    assert any("Hugging Face VideoMAE" in n for n in notes) and any("classifier head" in n for n in notes)
    hf.fc_norm.eps = 1e-6  # transformers' fc_norm keeps LayerNorm's 1e-5; the release (and vidpeft) use 1e-6
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        want = hf.fc_norm(hf.videomae(video)[0].mean(1))
        got = model(video)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_hf_pretraining_file_loads_encoder(tmp_path):
    torch.manual_seed(1)
    hf = transformers.VideoMAEForPreTraining(hf_config(use_mean_pooling=False)).eval()
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    with capture_notes() as notes:
        model = build(tmp_path / "pytorch_model.bin", use_mean_pooling=False)
    assert any("MAE decoder tensors dropped" in n for n in notes)
    video = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        want = hf.videomae(video)[0].mean(1)  # final layernorm applied inside, then the token mean
        got = model(video)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def to_release(state: dict, prefix: str = "") -> dict:
    """vidpeft names -> MCG-NJU/VideoMAE names: qkv.bias split into q_bias / v_bias (key part is zero)."""
    out = {}
    for k, v in state.items():
        if k.endswith("attn.qkv.bias"):
            q, key_part, val = v.chunk(3)
            assert not key_part.any()
            out[prefix + k.replace("qkv.bias", "q_bias")] = q
            out[prefix + k.replace("qkv.bias", "v_bias")] = val
        else:
            out[prefix + k] = v
    return out


def zero_key_bias(model) -> dict:
    state = model.state_dict()
    for k in state:
        if k.endswith("attn.qkv.bias"):
            state[k][32:64] = 0  # VideoMAE has no key bias
    return state


def test_release_finetuned_and_pretraining_files(tmp_path):
    torch.manual_seed(2)
    state = zero_key_bias(build())
    ckpt = {"module": {**to_release(state), "head.weight": torch.randn(400, 32), "head.bias": torch.randn(400)}}
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    loaded = build(tmp_path / "checkpoint.pth").state_dict()
    assert sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], state[k]) for k in state)

    enc = zero_key_bias(build(use_mean_pooling=False))
    pre = {**to_release(enc, "encoder."), "decoder.blocks.0.norm1.weight": torch.ones(16),
           "encoder_to_decoder.weight": torch.randn(16, 32), "mask_token": torch.zeros(1, 1, 16)}
    torch.save({"model": pre}, tmp_path / "pretrain.pth")
    loaded = build(tmp_path / "pretrain.pth", use_mean_pooling=False).state_dict()
    assert all(torch.equal(loaded[k], enc[k]) for k in enc)
    with pytest.raises(WeightsError, match=r"pretrain\.pth: a pre-training encoder .*use_mean_pooling: false"):
        build(tmp_path / "pretrain.pth")


def test_wrong_size_says_which(tmp_path):
    with torch.device("meta"):
        small = build_backbone(from_dict(BackboneConfig, {"family": "videomae", "name": "videomae_small",
                                                          "img_size": 224, "num_frames": 16}))
    shapes = {re.sub(r"qkv\.bias$", "q_bias", k): torch.zeros((), dtype=v.dtype).expand(v.shape[0] // 3 if
              k.endswith("qkv.bias") else v.shape) for k, v in small.state_dict().items()}
    shapes.update({k.replace("q_bias", "v_bias"): v for k, v in shapes.items() if k.endswith("q_bias")})
    torch.save(shapes, tmp_path / "vit_s_k400.pth")
    with pytest.raises(WeightsError, match=r"does not fit videomae videomae_base: .*look like videomae_small"):
        build_backbone(from_dict(BackboneConfig, {"family": "videomae", "name": "videomae_base", "img_size": 224,
                                                  "num_frames": 16, "checkpoint": str(tmp_path / "vit_s_k400.pth")}))


def test_other_clip_length_and_size_need_no_resizing(tmp_path):
    model = build()
    assert model(torch.randn(1, 8, 3, 48, 48)).shape == (1, 32)  # fixed sinusoid table, rebuilt for 4x6x6
