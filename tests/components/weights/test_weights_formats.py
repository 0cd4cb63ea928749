"""Every published weights layout loads, tensor for tensor (issue #14's table, one test per row).

Each file is built in the published layout (same keys, wrappers and metadata; random values) from a
tiny random-init model of the upstream library, then loaded through the backbone config a user
would write and compared with what the upstream library itself holds or loads.
"""

from __future__ import annotations

import argparse
import re
from collections import OrderedDict

import numpy as np
import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file

from components.backbones import BackboneConfig, build_backbone
from components.config import from_dict
from components.weights.reader import read_weights_file
from components.weights.strict import capture_notes

SWIN = {"family": "video_swin", "name": "swin3d_t", "img_size": 32, "num_frames": 4,
        "kwargs": {"embed_dim": 16, "depths": [2, 1], "num_heads": [1, 2], "window_size": [2, 4, 4],
                   "stochastic_depth_prob": 0.0}}
VIT = {"family": "timm_vit", "name": "vit_tiny_patch16_224", "img_size": 32, "num_frames": 4,
       "kwargs": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}
CLIP = {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32, "num_frames": 4}
# a timm CLIP tower with vidpeft-tiny-clip's image-tower shapes (projection to 32 = the head)
TIMM_CLIP = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32, num_classes=32)


def build(spec: dict, path=None, **changes):
    return build_backbone(from_dict(BackboneConfig, {**spec, **changes, "checkpoint": str(path) if path else None}))


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert torch.equal(got[k].float(), want[k].float()), k


def tiny_swin_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return build(SWIN).swin.state_dict()


def to_release_layout(state: dict, mmaction: bool) -> OrderedDict:
    """torchvision names -> Video-Swin-Transformer / MMAction2 names (``backbone.`` prefix, fc1/fc2,
    ``layers.s.blocks.j``, ``layers.s.downsample``; MMAction2 1.x calls the output norm ``norm{last}``)."""
    out = OrderedDict()
    stages = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("features.")) // 2
    for k, v in state.items():
        if m := re.match(r"features\.(\d+)\.(\d+)\.(.+)", k):
            rest = m.group(3).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            k = f"layers.{int(m.group(1)) // 2}.blocks.{m.group(2)}.{rest}"
        elif m := re.match(r"features\.(\d+)\.(.+)", k):
            k = f"layers.{int(m.group(1)) // 2}.downsample.{m.group(2)}"
        elif k.startswith("norm.") and mmaction:
            k = f"norm{stages - 1}." + k.removeprefix("norm.")
        out["backbone." + k] = v
    out["cls_head.fc_cls.weight"] = torch.randn(400, 32)
    out["cls_head.fc_cls.bias"] = torch.randn(400)
    return out


def test_torchvision_swin3d_state_dict(tmp_path):
    state = tiny_swin_state()
    state["head.weight"], state["head.bias"] = torch.randn(400, 32), torch.randn(400)  # K400 head, as published
    torch.save(state, tmp_path / "swin3d_t-7615ae03.pth")
    with capture_notes() as notes:
        model = build(SWIN, tmp_path / "swin3d_t-7615ae03.pth")
    assert_same(model.swin.state_dict(), {k: v for k, v in state.items() if not k.startswith("head.")})
    assert any("dropped the classifier head" in n for n in notes)


@pytest.mark.parametrize("mmaction", [False, True], ids=["video_swin_release", "mmaction2"])
def test_video_swin_release_and_mmaction2_checkpoints(tmp_path, mmaction):
    state = tiny_swin_state(seed=1)
    meta = {"epoch": np.int64(30), "iter": np.int64(12345), "hook_msgs": {"best_score": np.float64(0.79)},
            "mean": np.array([123.675, 116.28, 103.53]), "dtype": np.dtype("float32"), "mmcv_version": "1.3.1",
            "CLASSES": None, "time": "Thu Jun 24 06:21:10 2021"}
    ckpt = {"meta": meta, "state_dict": to_release_layout(state, mmaction),
            "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-3), "params": [0, 1]}]}}
    path = tmp_path / "swin_tiny_patch244_window877_kinetics400_1k.pth"
    torch.save(ckpt, path)
    with capture_notes() as notes:
        model = build(SWIN, path)
    assert_same(model.swin.state_dict(), state)
    said = " | ".join(notes)
    assert "prefix backbone." in said and "cls_head.fc_cls.weight" in said and "MMAction2" in said


def test_video_swin_window_change_resizes_tables(tmp_path):
    torch.save(tiny_swin_state(), tmp_path / "w.pth")
    with capture_notes() as notes:
        model = build(SWIN, tmp_path / "w.pth", kwargs={**SWIN["kwargs"], "window_size": [2, 2, 2]})
    assert any("from window (2, 4, 4) to (2, 2, 2)" in n for n in notes)
    table = model.swin.features[0][0].attn.relative_position_bias_table
    assert table.shape == (3 * 3 * 3, 1)
    model(torch.randn(1, 4, 3, 32, 32))  # the resized tables index correctly


def tiny_open_clip(seed: int = 0):
    torch.manual_seed(seed)
    build(CLIP)  # registers the tiny config
    return open_clip.create_model("vidpeft-tiny-clip")


def visual_of(state: dict) -> dict:
    return {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}


def test_openai_clip_torchscript_archive(tmp_path):
    clip = tiny_open_clip()
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(clip.half()), str(path))  # OpenAI ships fp16 TorchScript
    state = clip.float().state_dict()
    model = build(CLIP, path)
    got = model.visual.state_dict()
    assert_same(got, visual_of(state))
    assert all(v.dtype == torch.float32 for v in got.values())
    # the reader's tensors are exactly what TorchScript itself holds, without running the archive
    reference = torch.jit.load(str(path)).state_dict()
    assert_same(read_weights_file(path).tensors, dict(reference))


def test_timm_layout_clip_tower(tmp_path):
    clip = tiny_open_clip(seed=2)
    tower = timm.create_model("vit_base_patch16_clip_224", pretrained=False, **TIMM_CLIP)
    from timm.models.vision_transformer import checkpoint_filter_fn  # timm's own open_clip -> timm

    tower.load_state_dict(checkpoint_filter_fn(clip.state_dict(), tower))
    save_file(tower.state_dict(), str(tmp_path / "model.safetensors"))  # timm/vit_*_clip_224.openai on the hub
    model = build(CLIP, tmp_path / "model.safetensors")
    assert_same(model.visual.state_dict(), visual_of(clip.state_dict()))
    # the same file in the timm family: the projection head is dropped, the tower loads as is
    timm_model = build({**VIT, "name": "vit_base_patch16_clip_224"}, tmp_path / "model.safetensors")
    assert_same(timm_model.vit.state_dict(), {k: v for k, v in tower.state_dict().items() if not k.startswith("head.")})


@pytest.mark.parametrize("filename", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_open_clip_files_load_as_open_clip_loads_them(tmp_path, filename):
    clip = tiny_open_clip(seed=3)
    path = tmp_path / filename
    if filename.endswith(".safetensors"):
        save_file(clip.state_dict(), str(path))
    else:
        torch.save(clip.state_dict(), path)
    for size in (32, 48):  # 48: the position embedding is resampled, as open_clip does
        upstream = open_clip.create_model("vidpeft-tiny-clip", pretrained=str(path), force_image_size=size)
        model = build(CLIP, path, img_size=size)
        assert_same(model.visual.state_dict(), visual_of(upstream.state_dict()))


def tiny_vit_state(seed: int = 0, name: str = "vit_tiny_patch16_224") -> dict:
    torch.manual_seed(seed)
    return build({**VIT, "name": name}).vit.state_dict()


def test_timm_training_checkpoint_with_args(tmp_path):
    state = tiny_vit_state(seed=4)
    args = argparse.Namespace(model="vit_tiny_patch16_224", lr=5e-4, epochs=300, aa="rand-m9-mstd0.5", mixup=0.8)
    ckpt = {"epoch": 299, "arch": "vit_tiny_patch16_224", "state_dict": OrderedDict(state),
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0]}]}, "version": 2,
            "args": args, "metric": 75.4, "state_dict_ema": OrderedDict({k: v + 1 for k, v in state.items()})}
    torch.save(ckpt, tmp_path / "model_best.pth.tar")
    model = build(VIT, tmp_path / "model_best.pth.tar")
    assert_same(model.vit.state_dict(), state)  # the training weights, not the EMA copy
    assert {"args", "optimizer"} <= set(read_weights_file(tmp_path / "model_best.pth.tar").metadata)


@pytest.mark.parametrize("layout", ["model.safetensors", "pytorch_model.bin", "ddp_module.pth"])
def test_timm_hub_files_and_ddp_prefix(tmp_path, layout):
    state = tiny_vit_state(seed=5)
    path = tmp_path / layout
    if layout.endswith(".safetensors"):
        save_file(state, str(path))
    elif layout.startswith("ddp"):
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    assert_same(build(VIT, path).vit.state_dict(), state)


def test_timm_position_embedding_resampled_like_timm(tmp_path):
    state = tiny_vit_state(seed=6)
    torch.save(state, tmp_path / "vit.pth")
    model = build(VIT, tmp_path / "vit.pth", img_size=48)
    upstream = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=48, **VIT["kwargs"])
    from timm.models.vision_transformer import checkpoint_filter_fn

    upstream.load_state_dict(checkpoint_filter_fn(state, upstream))
    assert_same(model.vit.state_dict(), upstream.state_dict())


def test_vivit_own_file_with_other_frame_count(tmp_path):
    spec = {"family": "vivit", "name": "vit_tiny_patch16_224", "img_size": 32, "num_frames": 4,
            "kwargs": {**VIT["kwargs"], "temporal_depth": 1}}
    torch.manual_seed(7)
    state = build(spec).state_dict()
    torch.save(state, tmp_path / "vivit.pth")
    with capture_notes() as notes:
        model = build(spec, tmp_path / "vivit.pth", num_frames=8)
    assert model.temporal.pos_embed.shape[1] == 9
    assert any("temporal.pos_embed from 4 to 8" in n for n in notes)
    assert torch.equal(model.temporal.pos_embed[:, 0], state["temporal.pos_embed"][:, 0])  # class position kept
