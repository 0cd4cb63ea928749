"""The engine: one training step (accumulation, clipping, a dead batch), one evaluation pass over a
plain list of batches with views, unreadable clips and per-clip scores, and the optimizer groups."""

from __future__ import annotations

import pytest
import torch
from einops import repeat

from components.config import from_dict
from components.engine import TrainStep, evaluate, make_optimizer, run_pass, trainable_groups
from components.model import ModelConfig, build_model
from components.tasks import SingleLabel, model_task
from tests.conftest import TINY_VIT


def tiny(task="single_label"):
    torch.manual_seed(0)
    config = from_dict(ModelConfig, {"backbone": TINY_VIT, "head": {"task": task, "num_outputs": 3},
                                     "adapters": [{"type": "bottleneck", "bottleneck": 4}]})
    return build_model(config, 3), config


def clips(b, seed=0):
    return torch.randint(0, 256, (b, 4, 32, 32, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def snapshot(model):
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


def test_accumulated_steps_equal_one_step_on_the_whole_batch():
    batch = {"video": clips(4), "target": torch.tensor([0, 1, 2, 0])}
    runs = []
    for accumulate, parts in ((1, [batch]), (2, [{k: v[:2] for k, v in batch.items()},
                                                 {k: v[2:] for k, v in batch.items()}])):
        model, _ = tiny()
        model.eval()  # no dropout: the two runs see identical forwards
        opt = torch.optim.SGD(trainable_groups(model, 0.1), lr=0.1)
        step = TrainStep(model, opt, accumulate=accumulate, grad_clip=0.0)
        for part in parts:
            step(part)
        assert step.micro == 0  # the optimizer stepped after the last micro-batch
        runs.append(snapshot(model))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_clipping_bounds_the_update_and_a_dead_batch_moves_nothing():
    model, _ = tiny()
    before = snapshot(model)
    opt = torch.optim.SGD(trainable_groups(model, 1.0), lr=1.0)
    TrainStep(model, opt, grad_clip=1e-3)({"video": clips(2), "target": torch.tensor([0, 1])})
    moved = torch.cat([(a - b).flatten() for a, b in zip(snapshot(model), before)])
    assert 0 < moved.norm() <= 1e-3 + 1e-6  # SGD with lr 1: the update is the clipped gradient
    before = snapshot(model)
    out = TrainStep(model, opt)({"video": clips(2), "target": torch.tensor([0, 1])}, live=False)
    assert out["loss"].item() == 0.0
    assert all(torch.equal(a, b) for a, b in zip(snapshot(model), before))


def test_evaluate_a_plain_list_with_views_skips_and_scores_per_clip():
    model, config = tiny()
    task = model_task(config)
    video = clips(3)
    batches = [
        {"video": repeat(video[:2], "b t h w c -> b v t h w c", v=2), "target": torch.tensor([0, 2]),
         "ok": torch.tensor([True, True]), "clip_id": ["a", "b"]},
        {"video": repeat(video[2:], "b t h w c -> b v t h w c", v=2), "target": torch.tensor([1]),
         "ok": torch.tensor([False]), "clip_id": ["c"]},  # unreadable: skipped and counted
    ]
    result = evaluate(model, batches, task)
    assert (result.clips, result.skipped, result.ids) == (2, 1, ["a", "b"])
    assert result.scores.shape == (2, 3) and torch.allclose(result.scores.sum(-1), torch.ones(2))
    with torch.no_grad():  # identical views: the scores of the single view
        single = model.eval()({"video": video[:2]})["logits"].softmax(-1)
    torch.testing.assert_close(result.scores, single, atol=1e-5, rtol=1e-4)
    assert set(result.metrics) >= {"loss", "top1", "top5"}
    top1 = (single.argmax(-1) == torch.tensor([0, 2])).float().mean().item()
    assert result.metrics["top1"] == pytest.approx(top1)


def test_a_custom_forward_and_batches_without_targets_give_scores_only():
    model, _ = tiny()
    fixed = torch.tensor([[0.0, 5.0, 0.0]])
    result = evaluate(model, [{"video": clips(1)}], SingleLabel(3),
                      forward=lambda b: {"logits": fixed.expand(len(b["video"]), -1)})
    assert result.metrics == {} and result.ids == [0]
    assert result.scores.argmax(-1).tolist() == [1]


def test_a_training_pass_counts_skipped_clips_per_dataset():
    model, config = tiny()
    opt = make_optimizer(trainable_groups(model, 1e-3), 1e-3, 0.0)
    batch = {"video": clips(3), "target": torch.tensor([0, 1, 2]), "ok": torch.tensor([True, False, True]),
             "dataset_index": torch.tensor([0, 1, 1])}
    r = run_pass(model, [batch], model_task(config), step=TrainStep(model, opt), num_datasets=2)
    assert r.clips == 2 and r.skipped.tolist() == [0, 1] and r.acc.count == 2


def test_a_frozen_model_gets_a_placeholder_group_and_steps_evaluate_only():
    model, _ = tiny()
    model.requires_grad_(False)
    groups = trainable_groups(model, 1e-3)
    assert len(groups) == 1 and groups[0].shape == (1,)
    out = TrainStep(model, make_optimizer(groups, 1e-3, 0.0))({"video": clips(1), "target": torch.tensor([0])})
    assert "loss" in out


def test_the_decoder_actors_module_does_not_import_the_model_stack():
    """Ray Data starts its decoder actors afresh every epoch; each imports pipelines.data.ingest. The model
    stack (timm, open_clip, torchvision, adapters) it never uses must not load there."""
    import subprocess
    import sys

    code = ("import sys, pipelines.data.ingest; "
            "print(sorted(m for m in ('timm', 'open_clip', 'torchvision', 'components.adapters', "
            "'components.engine.loop') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_gradients_are_held_between_micro_batches_and_freed_after_the_optimizer_step():
    model, _ = tiny()
    opt = torch.optim.SGD(trainable_groups(model, 0.1), lr=0.1)
    step = TrainStep(model, opt, accumulate=2, grad_clip=0.0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    step({"video": clips(2), "target": torch.tensor([0, 1])})
    assert any(p.grad is not None for p in trainable)  # summed into by the next micro-batch
    step({"video": clips(2, seed=1), "target": torch.tensor([1, 0])})
    assert step.updates == 1 and all(p.grad is None for p in trainable)  # nothing held into validation
