"""Training levers (#16 item 1): activation checkpointing gives the plain gradients with fewer saved
activations; accumulation under DDP all-reduces on the last micro-batch only; the fp16 scaler's
state survives a checkpoint; the learning rate moves every optimizer step, warm-up first."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from components.config import from_dict
from components.engine import TrainStep, backbone_blocks, make_optimizer, make_scheduler, trainable_groups
from components.model import ModelConfig, build_model
from pipelines.run.checkpoints import SCALER, restore_checkpoint, save_checkpoint
from pipelines.run.train_loop import steps_per_epoch
from tests.components.adapters.test_adapter_matrix import BACKBONES

MHVA = {"type": "mhva", "bottleneck": 8}
M2CLIP_TINY = {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": 32, "num_frames": 4}


def build(family: str, checkpointing: bool):
    torch.manual_seed(0)
    if family == "m2clip":
        raw = {"kind": "m2clip", "backbone": M2CLIP_TINY, "adapters": [{"type": "ted", "bottleneck": 8}],
               "m2clip": {"text_adapters": [{"type": "text_adapter", "bottleneck": 8}], "cmlm_adapter_width": 8}}
        names = ["running", "jumping", "swimming"]
    else:
        raw = {"backbone": BACKBONES[family], "head": {"num_outputs": 3}, "adapters": [MHVA]}
        names = None
    model = build_model(from_dict(ModelConfig, {**raw, "grad_checkpointing": checkpointing}), 3, names)
    for p in model.parameters():  # adapters start at zero: give them weight so every path carries gradient
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    return model


def batch(b=2):
    g = torch.Generator().manual_seed(1)
    return {"video": torch.randint(0, 256, (b, 4, 32, 32, 3), dtype=torch.uint8, generator=g),
            "target": torch.tensor([0, 2][:b])}


def grads_and_saved(model):
    """Gradients of the trainable parameters after one backward, and how many tensors autograd saved."""
    saved = [0]

    def pack(t):
        saved[0] += 1
        return t

    torch.manual_seed(2)  # the same dropout / masking draws in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(batch())["loss"]
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, saved[0]


@pytest.mark.parametrize("family", ["timm_vit", "video_swin", "vivit", "openclip_vit", "m2clip"])
def test_checkpointed_blocks_give_the_plain_gradients_and_keep_fewer_activations(family):
    plain, plain_saved = grads_and_saved(build(family, False))
    model = build(family, True)
    blocks = backbone_blocks(model)
    assert blocks and all(getattr(b.forward, "vidpeft_checkpointed", False) for b in blocks)
    ckpt, ckpt_saved = grads_and_saved(model)
    assert ckpt.keys() == plain.keys() and plain
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)
    assert ckpt_saved < plain_saved  # only block inputs are kept for the backward
    assert "blocks.0.forward" not in model.state_dict()  # parameter names unchanged


def test_checkpointing_includes_frozen_blocks_and_needs_a_described_backbone():
    model = build("timm_vit", True)
    assert len(backbone_blocks(model)) == BACKBONES["timm_vit"]["kwargs"]["depth"]
    assert all(not p.requires_grad for b in backbone_blocks(model) for n, p in b.named_parameters()
               if "adapter" not in n)


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_accumulation_under_ddp_syncs_on_the_last_micro_batch_only(one_process_group):
    model = torch.nn.parallel.DistributedDataParallel(build("timm_vit", False), find_unused_parameters=True)
    synced: list[bool] = []
    first = next(p for p in model.parameters() if p.requires_grad)
    first.register_hook(lambda g: synced.append(model.require_backward_grad_sync) or g)
    opt = torch.optim.SGD(trainable_groups(model.module, 0.1), lr=0.1)
    step = TrainStep(model, opt, accumulate=3, grad_clip=0.0)
    for _ in range(3):
        step(batch())
    assert synced == [False, False, True]
    assert step.micro == 0 and step.updates == 1


def test_fp16_scaler_state_is_checkpointed_and_resumed(tmp_path):
    model = build("timm_vit", False)
    opt = make_optimizer(trainable_groups(model, 1e-3), 1e-3, 0.0)
    sched = make_scheduler(opt, 10, 2, 0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    step = TrainStep(model, opt, amp="fp16", scaler=scaler, scheduler=sched)
    for _ in range(2):
        step(batch())
    state = scaler.state_dict()
    assert state["scale"] != 1024.0  # it has moved: a resumed run must not start from the default again
    save_checkpoint(tmp_path, model, opt, sched, {"epoch": 0}, {}, scaler)
    assert (tmp_path / SCALER).exists()

    fresh = build("timm_vit", False)
    opt2 = make_optimizer(trainable_groups(fresh, 1e-3), 1e-3, 0.0)
    sched2 = make_scheduler(opt2, 10, 2, 0.1)
    resumed = TrainStep(fresh, opt2, amp="fp16", scheduler=sched2)  # the default scaler the loop builds
    assert resumed.scaler is not None and resumed.scaler.get_scale() == 65536.0
    restore_checkpoint(tmp_path, fresh, opt2, sched2, {}, resumed.scaler)
    assert resumed.scaler.state_dict() == state
    assert sched2.last_epoch == sched.last_epoch and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_the_learning_rate_warms_up_and_decays_per_optimizer_step():
    model = build("timm_vit", False)
    opt = torch.optim.SGD(trainable_groups(model, 0.1), lr=0.1)
    step = TrainStep(model, opt, accumulate=2, scheduler=make_scheduler(opt, total_steps=6, warmup_steps=2,
                                                                        min_ratio=0.01))
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(16):  # 8 optimizer steps: 2 more than planned
        step(batch())
        if step.micro == 0:
            lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.001)  # warm-up starts at min_ratio x lr
    assert lrs[2] == pytest.approx(0.1)  # peak after the warm-up steps
    assert all(a > b for a, b in zip(lrs[2:6], lrs[3:6]))  # cosine decay, step by step
    assert lrs[5] == lrs[6] == lrs[8] == pytest.approx(lrs[5])  # past the plan: held, never wraps round
    assert lrs[5] < 0.01


def test_steps_per_epoch_plans_shards_batches_and_accumulation():
    assert steps_per_epoch(100, 8, 1, 1) == 13
    assert steps_per_epoch(100, 8, 2, 1) == 7  # 50 clips per worker
    assert steps_per_epoch(100, 8, 2, 4) == 2
    assert steps_per_epoch(0, 8, 1, 1) == 1


def test_raising_epochs_on_resume_follows_the_new_schedule_not_the_saved_floor(tmp_path):
    """`train --resume --set optim.epochs=N` (more than the checkpoint planned): the saved schedule had ended,
    so the added epochs ran at its floor lr; the steps taken are kept and the rest follows the new curve."""
    model = build("timm_vit", False)
    opt = make_optimizer(trainable_groups(model, 1e-3), 1e-3, 0.0)
    sched = make_scheduler(opt, 4, 0, 0.01)
    step = TrainStep(model, opt, scheduler=sched)
    for _ in range(4):
        step(batch())
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)  # the floor: the 4-step schedule is over
    save_checkpoint(tmp_path, model, opt, sched, {"epoch": 0}, {})

    fresh = build("timm_vit", False)
    opt2 = make_optimizer(trainable_groups(fresh, 1e-3), 1e-3, 0.0)
    sched2 = make_scheduler(opt2, 12, 0, 0.01)  # three times the steps
    state = restore_checkpoint(tmp_path, fresh, opt2, sched2, {})
    assert state["schedule_steps"] == [4, 12] and sched2.last_epoch == sched.last_epoch
    mid = opt2.param_groups[0]["lr"]
    assert 1e-4 < mid < 1e-3  # a third of the way down a 12-step cosine, not the floor
    step2 = TrainStep(fresh, opt2, scheduler=sched2)
    lrs = []
    for _ in range(8):
        step2(batch())
        lrs.append(opt2.param_groups[0]["lr"])
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(1e-5)  # down to the floor at step 12
    # the same length: nothing changes, nothing is said
    sched3 = make_scheduler(make_optimizer(trainable_groups(fresh, 1e-3), 1e-3, 0.0), 4, 0, 0.01)
    assert "schedule_steps" not in restore_checkpoint(tmp_path, fresh, sched3.optimizer, sched3, {})
