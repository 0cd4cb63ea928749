"""No code runs from a config: backbone kwargs are architecture settings only, checked per family, and
every weights file goes through the safe reader; bad models and weights fail on the driver in one line.

The "evil" file is a pickle that creates a marker file when unpickled: if any config or CLI path
unpickled it, the marker would exist.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from safetensors.torch import save_file

from components.backbones.config import BackboneConfig
from components.backbones.registry import build_backbone
from components.config import ConfigError, from_dict, resolve
from components.model import ModelConfig
from pipelines.config import ExperimentConfig
from pipelines.run.preflight import check_model
from tests.conftest import TINY_VIT

CLIP = {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32, "num_frames": 2}
SWIN = {"family": "video_swin", "name": "swin3d_t", "img_size": 32, "num_frames": 4,
        "kwargs": {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": [2, 4, 4]}}
VIVIT = {**TINY_VIT, "family": "vivit", "kwargs": {**TINY_VIT["kwargs"], "temporal_depth": 1}}


class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling calls open(marker, "w"): code from a file
        return (open, (self.marker, "w"))


def evil_file(tmp_path, name="evil.pt"):
    marker = tmp_path / "PWNED"
    path = tmp_path / name
    with open(path, "wb") as f:  # a torch-style pickle: a state dict whose value runs code when loaded
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil(marker)}, f)
    return path, marker


def backbone(base: dict, **changes) -> BackboneConfig:
    data = copy.deepcopy(base)
    data.update(changes)
    return from_dict(BackboneConfig, data, prefix="model.backbone")


@pytest.mark.parametrize("base,kwargs", [
    (CLIP, {"weights_only": False}),
    (CLIP, {"pretrained": "EVIL"}),
    (CLIP, {"load_weights": True, "pretrained_image_path": "EVIL"}),
    (CLIP, {"vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": True}}),
    (CLIP, {"text_cfg": {"hf_model_name": "x", "hf_model_pretrained": True}}),
    (CLIP, {"cache_dir": "EVIL"}),
    (TINY_VIT, {"checkpoint_path": "EVIL"}),
    (TINY_VIT, {"pretrained": True}),
    (TINY_VIT, {"pretrained_cfg_overlay": {"file": "EVIL"}}),
    (SWIN, {"weights_only": False}),
    (VIVIT, {"checkpoint_path": "EVIL"}),
])
def test_loading_kwargs_are_refused_and_nothing_is_unpickled(tmp_path, base, kwargs):
    path, marker = evil_file(tmp_path)
    kwargs = {k: (str(path) if v == "EVIL" else v) for k, v in kwargs.items()}
    cfg = backbone(base, checkpoint=str(path), kwargs={**base.get("kwargs", {}), **kwargs})
    with pytest.raises(ConfigError, match=r"model\.backbone\.kwargs\.") as err:
        build_backbone(cfg)
    assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("base", [CLIP, TINY_VIT, SWIN, VIVIT])
def test_a_pickle_checkpoint_is_never_unpickled(tmp_path, base):
    path, marker = evil_file(tmp_path)
    with pytest.raises((ValueError, ConfigError), match="evil.pt"):
        build_backbone(backbone(base, checkpoint=str(path)))
    assert not marker.exists()


@pytest.mark.parametrize("override,key", [
    ("model.backbone.kwargs={patch_size:8,embed_dim:64}", "model.backbone.kwargs.patch_size:8"),
    ("model.backbone.kwargs.embed_dim=null", "model.backbone.kwargs.embed_dim"),
    ("model.backbone.kwargs.embed_dims=64", "model.backbone.kwargs.embed_dims"),
    ("model.backbone.kwargs.embed_dim=wide", "model.backbone.kwargs.embed_dim"),
    ("model.backbone.kwargs.depth=[2, {a: 1}]", "model.backbone.kwargs.depth"),
])
def test_malformed_unknown_or_null_kwargs_name_the_key(override, key):
    cfg = resolve(ExperimentConfig, [], ["model.backbone.family=timm_vit", "model.head.num_outputs=3", override])
    with pytest.raises(ConfigError) as err:
        check_model(cfg)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_architecture_kwargs_still_build_each_family():
    assert build_backbone(backbone(TINY_VIT)).vit.embed_dim == 32
    assert build_backbone(backbone(SWIN)).spec.block_dims[0] == 16
    assert build_backbone(backbone(VIVIT)).temporal.blocks.__len__() == 1
    clip = build_backbone(backbone(CLIP, kwargs={"force_patch_dropout": 0.0, "quick_gelu": True}))
    assert clip.spec.family == "openclip_vit"


def test_openclip_weights_load_through_the_safe_reader(tmp_path):
    """A real open_clip state dict (safetensors) still loads, position embeddings resampled to img_size."""
    from components.backbones.openclip_vit import create_openclip

    src = create_openclip(backbone(CLIP, img_size=32))
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, str(tmp_path / "clip.safetensors"))
    loaded = create_openclip(backbone(CLIP, img_size=32, checkpoint=str(tmp_path / "clip.safetensors")))
    assert torch.equal(loaded.visual.conv1.weight, src.visual.conv1.weight)
    assert torch.equal(loaded.token_embedding.weight, src.token_embedding.weight)
    bigger = create_openclip(backbone(CLIP, img_size=48, checkpoint=str(tmp_path / "clip.safetensors")))
    assert bigger.visual.positional_embedding.shape[0] > src.visual.positional_embedding.shape[0]


# ---- errors on the driver, before Ray: one line naming the key -----------------------------------------

def experiment(*overrides: str) -> ExperimentConfig:
    base = [f"model.backbone={TINY_VIT}".replace("'", ""), "model.head.num_outputs=3"]
    return resolve(ExperimentConfig, [], [*base, *overrides])


def test_architecture_errors_name_the_model(tmp_path):
    with pytest.raises(ConfigError, match="model.backbone.family"):
        check_model(experiment("model.backbone.family=nope"))
    with pytest.raises(ConfigError, match=r"layer|index|range") as err:
        check_model(experiment("model.adapters=[{type: bottleneck, layers: [7]}]"))
    assert "\n" not in str(err.value)


def vit_weights(tmp_path, **kw) -> str:
    data = copy.deepcopy(TINY_VIT)
    data["kwargs"].update(kw)
    state = build_backbone(from_dict(BackboneConfig, data)).vit.state_dict()
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


def test_weights_errors_name_the_checkpoint_key_and_file(tmp_path):
    good = vit_weights(tmp_path)
    check_model(experiment(f"model.backbone.checkpoint={good}"))  # fits: no error
    wider = vit_weights(tmp_path, embed_dim=48)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(open(good, "rb").read()[:300])
    garbage = tmp_path / "junk.pt"
    garbage.write_bytes(b"not a weights file at all")
    other = tmp_path / "other.safetensors"
    save_file({"unrelated": torch.zeros(2)}, str(other))
    for path in (wider, truncated, garbage, other, tmp_path / "absent.safetensors"):
        with pytest.raises(ConfigError) as err:
            check_model(experiment(f"model.backbone.checkpoint={path}"))
        text = str(err.value)
        assert text.startswith("model.backbone.checkpoint: ") and str(path) in text and "\n" not in text, text


def test_models_build_on_the_meta_device_without_memory():
    from pipelines.run.preflight import build_on_meta

    for bb in (TINY_VIT, SWIN, VIVIT, CLIP):
        model = build_on_meta(from_dict(ModelConfig, {"backbone": bb}), 3, None)
        assert all(p.is_meta for p in model.parameters()), bb["family"]
    m2clip = from_dict(ModelConfig, {"kind": "m2clip", "backbone": CLIP})  # tokenises at build: CPU
    assert build_on_meta(m2clip, 3, ["a", "b", "c"]).zero_shot_logits


def test_pickle_payload_is_what_we_think(tmp_path):
    """The evil file really runs code under plain pickle (so the tests above can fail)."""
    path, marker = evil_file(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.exists()
