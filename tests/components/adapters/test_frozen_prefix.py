"""Frozen blocks before the first adapted block cost no autograd memory in adapter tuning.

PyTorch records a graph only for ops with an input that requires grad. With the backbone frozen and
adapters from block k on, blocks 0..k-1 see neither trainable weights nor a grad-requiring input, so
they save no activations for backward: adapter tuning gets the "frozen prefix" saving without a
``torch.no_grad()`` path (benchmarks/README.md measured no gain from adding one). These tests pin
that down for each ViT family, so a change that puts a trainable tensor early (a trainable
position embedding, an adapter hooked in front of the blocks) shows up here.
"""

from __future__ import annotations

import pytest
import torch

from components.config import from_dict
from components.model import ModelConfig, build_model
from tests.conftest import TINY_VIT

TINY_CLIP = {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32, "num_frames": 2}


def _blocks(model):
    bb = model.backbone
    return list(bb.vit.blocks) if hasattr(bb, "vit") else list(bb.visual.transformer.resblocks)


def _record(model, video) -> list[bool]:
    """For each block: does its output carry an autograd graph (i.e. were activations saved)?"""
    seen: list[bool] = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append(o.grad_fn is not None)) for b in _blocks(model)]
    try:
        model({"video": video, "target": torch.zeros(video.shape[0], dtype=torch.long)})["loss"].backward()
    finally:
        for h in hooks:
            h.remove()
    return seen


def _model(backbone: dict, finetune: str, layers: list[int]):
    adapters = [] if finetune != "adapters" else [
        {"type": "bottleneck", "sites": ["mlp"], "bottleneck": 4, "layers": layers}]
    cfg = from_dict(ModelConfig, {"backbone": backbone, "adapters": adapters, "finetune": finetune})
    torch.manual_seed(0)
    return build_model(cfg, 3).train()


@pytest.mark.parametrize("backbone", [dict(TINY_VIT, kwargs=dict(TINY_VIT["kwargs"], depth=4)), TINY_CLIP],
                         ids=["timm_vit", "openclip_vit"])
def test_blocks_before_first_adapter_record_no_graph(backbone):
    video = torch.randint(0, 256, (2, backbone["num_frames"], 32, 32, 3), dtype=torch.uint8)
    n = len(_blocks(_model(backbone, "full", [])))
    first = n - 1
    adapted = _model(backbone, "adapters", [first])
    assert _record(adapted, video) == [False] * first + [True]
    # the adapter still learns: its gradient reaches it through the graph that starts at its block
    grads = [p.grad for p in adapted.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    # full fine-tuning records every block (what the saving is measured against)
    assert _record(_model(backbone, "full", []), video) == [True] * n
