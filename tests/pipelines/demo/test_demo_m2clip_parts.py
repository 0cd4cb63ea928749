"""The m2clip demo's parts on their own: the captioned compositions, their held-out split, and a tiny
CLIP trained in full (contrastive pretraining) written as an open_clip checkpoint that loads back."""

from __future__ import annotations

import itertools
import math

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from components.config import ConfigError, from_dict
from components.data.synth_scenes import (
    COLOURS,
    COMPOSITION_DIRECTIONS,
    composition_names,
    held_out_compositions,
    render_compositions,
)
from components.model import ModelConfig, build_model

NAMES = ["red disc moving right", "blue square moving up", "green disc moving left"]
BACKBONE = {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32, "num_frames": 4}
PRETRAIN = {"kind": "m2clip", "backbone": BACKBONE, "finetune": "full",
            "m2clip": {"templates": ["a {}"], "contrastive_weight": 1.0, "cmc": False, "cmlm": False, "vc": False,
                       "eval_head": "xm"}}


def test_held_out_compositions_are_new_triples_of_seen_pairs():
    names = [n.split() for n in composition_names()]  # colour, shape, "moving", direction
    held = set(held_out_compositions())
    assert len(names) == 32 and len(held) == 8
    seen = [names[i] for i in range(32) if i not in held]
    for i in held:  # every pair of words of a held-out name occurs in some training name
        c, s, _, d = names[i]
        for a, b in itertools.combinations((0, 1, 3), 2):
            assert any(n[a] == names[i][a] and n[b] == names[i][b] for n in seen), (c, s, d)


@pytest.mark.parametrize("label", [0, 5, 10, 15])
def test_compositions_move_as_their_caption_says(label):
    clip, speed, caption = render_compositions(np.random.default_rng(label), label, 32, frames=8, size=32)
    assert caption == "a " + composition_names()[label] and speed > 0
    colour = COLOURS[caption.split()[1]]
    centre = [np.argwhere((f == np.array(colour, dtype=np.uint8)).all(-1)).mean(0) for f in (clip[0], clip[-1])]
    dy, dx = centre[1] - centre[0]
    expected = COMPOSITION_DIRECTIONS.index(caption.split()[-1]) * math.pi / 2
    assert abs((math.atan2(dy, dx) - expected + math.pi) % (2 * math.pi) - math.pi) < math.pi / 6


def test_full_contrastive_pretraining_exports_an_open_clip_checkpoint(tmp_path):
    model = build_model(from_dict(ModelConfig, PRETRAIN), 3, NAMES)
    assert all(p.requires_grad for p in [*model.backbone.parameters(), *model.text.parameters()])
    video = torch.randint(0, 256, (3, 4, 32, 32, 3), dtype=torch.uint8)
    out = model({"video": video, "target": torch.tensor([0, 1, 2])})
    assert set(out) == {"logits", "loss", "loss/contrastive"}  # the contrastive loss only
    out["loss"].backward()
    assert model.text.token_embedding.weight.grad is not None and model.backbone.visual.proj.grad is not None

    state = model.export_backbone_state()
    path = tmp_path / "clip.safetensors"
    save_file(state, str(path))
    plain = open_clip.create_model("vidpeft-tiny-clip", pretrained=None, force_image_size=32)
    plain.load_state_dict(state, strict=True)  # exactly open_clip's keys, both towers and logit_scale

    # the adapters' run loads it as a downloaded checkpoint: the frozen towers are the pretrained ones
    adapted = build_model(from_dict(ModelConfig, {
        "kind": "m2clip", "backbone": {**BACKBONE, "checkpoint": str(path)}, "adapters": [{"type": "ted", "bottleneck": 8}],
        "m2clip": {"text_adapters": [{"type": "text_adapter", "bottleneck": 8}], "cmlm_adapter_width": 8}}), 3, NAMES)
    model.eval()
    adapted.eval()
    prompts = ["a {}"]  # adapters start as identities: same scores as the pretrained CLIP itself
    assert torch.allclose(adapted.zero_shot_logits(video, NAMES, prompts), model.zero_shot_logits(video, NAMES, prompts),
                          atol=1e-5)


def test_full_run_weights_carry_the_towers_for_zero_shot(tmp_path):
    from components.checkpoint import trainable_state_dict

    trained = build_model(from_dict(ModelConfig, PRETRAIN), 3, NAMES)
    with torch.no_grad():
        trained.backbone.visual.proj.add_(1.0)
    path = tmp_path / "weights.safetensors"
    save_file(trainable_state_dict(trained), str(path))
    other = ["yellow square moving down", "red square moving up"]
    fresh = build_model(from_dict(ModelConfig, PRETRAIN), 2, other)
    loaded = fresh.load_transfer_weights(str(path))
    assert "backbone.visual.proj" in loaded and torch.equal(fresh.backbone.visual.proj, trained.backbone.visual.proj)


def test_m2clip_still_refuses_a_linear_probe():
    with pytest.raises(ConfigError, match="model.finetune"):
        build_model(from_dict(ModelConfig, {**PRETRAIN, "finetune": "linear"}), 3, NAMES)
