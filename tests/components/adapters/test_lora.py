"""LoRA beyond the adapter matrix: fused q/k/v slices, merging into the frozen weights on every backbone
family and on the CLIP text tower (outputs within 1e-5, parameters and FLOPs of the frozen model), and
the registry's merge declarations."""

from __future__ import annotations

import pytest
import torch

from components.adapters import get_adapter_type, register_adapter
from components.adapters.bottleneck import BottleneckAdapter, BottleneckConfig
from components.adapters.lora import LoRA, LoRAConfig
from components.adapters.merge import merge_adapters, unmergeable
from components.adapters.wrapper import AdaptedModule
from components.config import from_dict
from components.flops import forward_flops
from components.model import ModelConfig, build_model
from tests.components.adapters.test_adapter_matrix import BACKBONES, batch, make

LORA = {"type": "lora", "sites": ["attn", "mlp"], "rank": 4, "alpha": 8}


def scramble(model, seed: int = 3) -> None:
    """As if trained: every trainable tensor (LoRA's B included) random, so a wrong merge shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_merge_equals_unmerged_with_the_frozen_models_size_and_flops(backbone):
    cfg, model = make(backbone, [LORA])
    _, frozen = make(backbone, [])
    scramble(model)
    model.eval()
    data = batch()
    with torch.no_grad():
        before = model(data)["logits"]
        assert not torch.allclose(before, frozen(data)["logits"], atol=1e-4)  # the LoRA acts
    assert merge_adapters(model, cfg.adapters) == ["lora"]
    assert not any(isinstance(m, AdaptedModule) for m in model.modules())
    with torch.no_grad():
        after = model(data)["logits"]
    diff = (after - before).abs().max().item()
    print(f"{backbone}: merged vs unmerged max abs diff {diff:.2e}")
    assert diff <= 1e-5
    assert n_params(model) == n_params(frozen)  # frozen backbone + head, nothing else
    assert forward_flops(model, data) == forward_flops(frozen, data)


def test_text_tower_lora_is_identity_at_init_and_merges():
    from tests.components.m2clip.test_m2clip import NAMES, clip_video
    from tests.components.m2clip.test_m2clip import make as make_m2clip

    text_lora = {"type": "lora", "sites": ["attn", "mlp"], "rank": 2, "layers": [-1]}
    frozen = make_m2clip(adapters=[], text_adapters=[])
    model = make_m2clip(adapters=[{**LORA, "name": "visual"}], text_adapters=[text_lora])
    video = clip_video()
    ids = frozen.prompt_ids[0]
    with torch.no_grad():
        assert torch.equal(model.text.encode_tokens(ids), frozen.text.encode_tokens(ids))
        assert torch.equal(model.zero_shot_logits(video), frozen.zero_shot_logits(video))
    assert any(".adapters.lora." in n for n, p in model.text.named_parameters() if p.requires_grad)
    scramble(model)
    model.eval()
    with torch.no_grad():
        before = model.zero_shot_logits(video, ["diving", *NAMES])
    merge_adapters(model, [*model.config.adapters, *model.config.m2clip.text_adapters])
    with torch.no_grad():
        after = model.zero_shot_logits(video, ["diving", *NAMES])
    assert (after - before).abs().max().item() <= 1e-5
    assert not any(isinstance(m, LoRA) for m in model.modules())  # (the CMLM block keeps its own adapter)


def test_fused_qkv_slices_update_only_the_targeted_rows():
    cfg, model = make("openclip_vit", [{"type": "lora", "targets": ["k"], "rank": 2}])
    layer = next(m for m in model.modules() if isinstance(m, LoRA))
    with torch.no_grad():
        layer.updates["k"].B.normal_()
    (param, delta), = layer.deltas().items()
    width = delta.shape[1]
    assert param == "in_proj_weight" and delta.shape == (3 * width, width)
    assert delta[width : 2 * width].abs().sum() > 0
    assert delta[:width].abs().sum() == 0 and delta[2 * width :].abs().sum() == 0


def test_rank_dropout_acts_in_training_only():
    _, model = make("timm_vit", [{**LORA, "dropout": 0.5}])
    scramble(model)
    layer = next(m for m in model.modules() if isinstance(m, LoRA))
    layer.eval()
    assert all(torch.equal(a, b) for a, b in zip(layer.deltas().values(), layer.deltas().values()))
    layer.train()
    torch.manual_seed(0)
    drawn = [torch.cat([d.flatten() for d in layer.deltas().values()]) for _ in range(4)]
    assert any(not torch.equal(drawn[0], d) for d in drawn[1:])


def test_unmergeable_adapters_stay_and_say_why():
    adapters = [LORA, {"type": "bottleneck", "sites": ["mlp"], "bottleneck": 4}]
    cfg, model = make("timm_vit", adapters)
    assert unmergeable(cfg.adapters) == ["bottleneck: not mergeable: a ReLU between its down and up projections"]
    scramble(model)
    model.eval()
    data = batch()
    with torch.no_grad():
        before = model(data)["logits"]
    merge_adapters(model, cfg.adapters)
    kept = {k for m in model.modules() if isinstance(m, AdaptedModule) for k in m.adapters}
    assert kept == {"bottleneck"}
    with torch.no_grad():
        assert (model(data)["logits"] - before).abs().max().item() <= 1e-5


def test_every_type_declares_its_merge_and_registration_demands_it():
    from components.adapters import adapter_types

    for name in adapter_types():
        kind = get_adapter_type(name)
        assert kind.mergeable == (name == "lora") and (kind.mergeable or kind.not_mergeable)
    with pytest.raises(ValueError, match="not_mergeable"):
        register_adapter("undeclared", BottleneckConfig, BottleneckAdapter)


def test_config_validation():
    for bad in ({"rank": 0}, {"dropout": 1.0}, {"sites": ["pre_mlp"]}, {"targets": ["qkv"]}):
        with pytest.raises(Exception, match="rank|dropout|sites|targets"):
            from_dict(ModelConfig, {"backbone": BACKBONES["timm_vit"], "adapters": [{**LORA, **bad}]})
    assert LoRAConfig().targets == ["q", "k", "v", "out"]
