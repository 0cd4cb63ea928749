"""The fine-tuning regularisers (issue 27 item 3), each with a test that fails if it is ignored:
mixup / cutmix over clips and label smoothing, drop-path on every backbone family, EMA of the
trainable weights (evaluation, checkpoint, resume), layer-wise LR decay, RandAugment per clip;
and their config keys (off by default, bad settings one line)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from components.config import ConfigError, from_dict, resolve
from components.engine import (
    ClipMix, TrainStep, TrainableEma, enable_drop_path, layer_decay_groups, make_optimizer, make_scheduler,
    step_scheduler, trainable_groups,
)
from components.engine.drop_path import ClipDropPath
from components.engine.optim import optimizer_for
from components.model import ModelConfig, build_model
from components.video.transforms import ClipAugment
from pipelines.run.checkpoints import WEIGHTS, restore_checkpoint, save_checkpoint
from pipelines.config import ExperimentConfig
from pipelines.run.regularisers import EMA_FILE, WorkerRegularisers
from tests.conftest import TINY_VIT
from tests.components.adapters.test_adapter_matrix import BACKBONES, S, T

BOTTLENECK = [{"type": "bottleneck", "sites": ["attn", "mlp"], "bottleneck": 4}]


def model_config(backbone=TINY_VIT, adapters=(), finetune=None, task="single_label"):
    finetune = finetune or ("adapters" if adapters else "linear")
    return from_dict(ModelConfig, {"backbone": backbone, "adapters": list(adapters), "finetune": finetune,
                                   "head": {"task": task, "num_outputs": 3}})


def tiny(backbone=TINY_VIT, adapters=BOTTLENECK, finetune=None, seed=0):
    torch.manual_seed(seed)
    return build_model(model_config(backbone, adapters, finetune), 3)


def clips(b, seed=0):
    return torch.randint(0, 256, (b, T, S, S, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def frames_clip(value: int) -> torch.Tensor:
    """A (T, 16, 16, 3) clip whose frame t is filled with value + t: a pixel says where it came from."""
    return (torch.arange(T, dtype=torch.uint8).view(T, 1, 1, 1) + value).expand(T, 16, 16, 3).clone()


def one_hot(index: int, k: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(index), k).float()


def experiment(*overrides: str) -> ExperimentConfig:
    return resolve(ExperimentConfig, [], [f"model.backbone={TINY_VIT}", *overrides])


# ---- mixup / cutmix / label smoothing --------------------------------------------------------------


def test_cutmix_cuts_one_box_through_every_frame_from_the_same_frame_of_the_partner():
    np.random.seed(0)
    mix = ClipMix("single_label", 5, cutmix_alpha=1.0)
    video = torch.stack([frames_clip(10), frames_clip(100)])
    out = mix({"video": video, "target": torch.tensor([1, 3])})
    pasted = out["video"][0] != video[0]  # (T, H, W, C)
    assert pasted.any() and not pasted.all()
    assert (pasted == pasted[:1, :, :, :1]).all()  # one box for every frame (and channel)
    assert torch.equal(out["video"][0][pasted], video[1][pasted])  # frame t from the partner's frame t
    lam = 1 - pasted[0, :, :, 0].float().mean()
    torch.testing.assert_close(out["target"][0], lam * one_hot(1, 5) + (1 - lam) * one_hot(3, 5))
    torch.testing.assert_close(out["target"][1], lam * one_hot(3, 5) + (1 - lam) * one_hot(1, 5))
    assert torch.equal(video[0], frames_clip(10))  # the caller's batch is left as it was


def test_mixup_blends_whole_clips_with_one_lambda_and_mixes_multi_label_vectors():
    np.random.seed(1)
    mix = ClipMix("multi_label", 4, mixup_alpha=1.0)
    video = torch.stack([frames_clip(10), frames_clip(100)])
    y = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    out = mix({"video": video, "target": y})
    lam = out["target"][0, 0]
    assert 0 < lam < 1
    torch.testing.assert_close(out["target"], torch.stack([lam * y[0] + (1 - lam) * y[1], lam * y[1] + (1 - lam) * y[0]]))
    expected = (lam * video[0].float() + (1 - lam) * video[1].float()).round()
    assert out["video"].dtype == torch.uint8
    assert (out["video"][0].float() - expected).abs().max() <= 1  # every frame, the same lambda


def test_an_odd_batch_mixes_its_even_part_and_smooths_the_last_clip():
    np.random.seed(2)
    mix = ClipMix("single_label", 4, mixup_alpha=1.0, label_smoothing=0.2)
    video = torch.stack([frames_clip(10), frames_clip(100), frames_clip(50)])
    out = mix({"video": video, "target": torch.tensor([0, 1, 2])})
    assert torch.equal(out["video"][2], video[2]) and not torch.equal(out["video"][0], video[0])
    torch.testing.assert_close(out["target"][2], torch.tensor([0.05, 0.05, 0.85, 0.05]))
    torch.testing.assert_close(out["target"].sum(dim=1), torch.ones(3))


def test_label_smoothing_reaches_the_loss_through_the_train_step():
    model = tiny()
    model.eval()  # no dropout: the loss below is recomputed on the same weights (lr 0)
    batch = {"video": clips(4), "target": torch.tensor([0, 1, 2, 0])}
    step = TrainStep(model, torch.optim.SGD(trainable_groups(model, 0.0), lr=0.0),
                     transform=ClipMix("single_label", 3, label_smoothing=0.2))
    loss = step(batch)["loss"]
    with torch.no_grad():
        logits = model(batch)["logits"]
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch["target"], label_smoothing=0.2))
    assert abs(loss - F.cross_entropy(logits, batch["target"])) > 1e-3


@pytest.mark.parametrize("overrides, fragment", [
    (["model.head.task=regression", "data.mixup_alpha=0.8"], "regression has none"),
    (["model.head.task=regression", "data.cutmix_alpha=1.0"], "regression has none"),
    (["model.head.task=multi_label", "optim.label_smoothing=0.1"], "single_label heads only"),
    (["model.kind=multi_dataset", "data.mixup_alpha=0.8"], "model.kind classifier"),
    (["data.rand_augment=rand-m9-n2"], "set augment: true"),
    (["data.augment=true", "data.rand_augment=rand-m9-zz3"], "not a RandAugment config"),
    (["data.mix_mode=clip"], "mix_mode"),
    (["optim.drop_path=1.0"], "drop_path"),
    (["optim.layer_decay=0"], "layer_decay"),
])
def test_bad_regulariser_settings_are_one_line_config_errors(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment) as e:
        experiment(*overrides)
    assert "\n" not in str(e.value)


def test_defaults_are_off_and_leave_training_as_it_was():
    cfg = experiment()
    model = tiny()
    regs = WorkerRegularisers(cfg, model, 3)
    assert regs.transform is None and regs.ema is None and regs.checkpoint_files() == {}
    assert not any(m._forward_hooks for m in model.modules())


# ---- drop-path ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(BACKBONES))
def test_drop_path_drops_frozen_blocks_in_training_and_leaves_eval_equal_to_the_frozen_backbone(family):
    frozen = tiny(BACKBONES[family], adapters=())  # linear probe: every block frozen
    dropped = tiny(BACKBONES[family], adapters=())
    adapted = tiny(BACKBONES[family], adapters=BOTTLENECK)
    for m in (dropped, adapted):
        assert enable_drop_path(m, 0.5, T) > 0
    x = clips(4)
    with torch.no_grad():
        reference = frozen.eval().features(x)
        torch.testing.assert_close(dropped.eval().features(x), reference, rtol=0, atol=0)
        torch.testing.assert_close(adapted.eval().features(x), reference, rtol=0, atol=0)  # step 0, eval
        torch.testing.assert_close(frozen.train().features(x), reference, rtol=0, atol=0)
        torch.manual_seed(1)
        first, second = dropped.train().features(x), dropped.features(x)
    assert not torch.allclose(first, reference) and not torch.allclose(first, second)


def test_a_clip_keeps_or_drops_a_branch_for_all_its_frames():
    branch = nn.Identity()
    branch.register_forward_hook(ClipDropPath(0.5, frames=T))
    x = torch.ones(16 * T, 5, 6)
    torch.manual_seed(0)
    out = branch.train()(x).view(16, T, -1)  # rows are (b t)
    assert ((out == 0) | (out == 2)).all()
    assert (out == out[:, :1]).all()  # all frames of a clip alike
    assert (out[:, 0, 0] == 0).any() and (out[:, 0, 0] == 2).any()
    assert torch.equal(branch.eval()(x), x)


def test_drop_path_rises_linearly_with_depth_and_replaces_the_backbones_own():
    swin = dict(BACKBONES["video_swin"], kwargs={**BACKBONES["video_swin"]["kwargs"], "stochastic_depth_prob": 0.3})
    model = tiny(swin, adapters=())
    blocks = [model.backbone.swin.features[0][0], model.backbone.swin.features[0][1], model.backbone.swin.features[2][0]]
    assert [b.stochastic_depth.p for b in blocks] == pytest.approx([0.0, 0.15, 0.3])  # torchvision's own
    enable_drop_path(model, 0.2, T)
    assert [b.stochastic_depth.p for b in blocks] == [0.0, 0.0, 0.0]
    assert [next(iter(b.stochastic_depth._forward_hooks.values())).p for b in blocks] == pytest.approx([0, 0.1, 0.2])
    vit = tiny(adapters=())
    enable_drop_path(vit, 0.2, T)
    hooks = [next(iter(b.drop_path2._forward_hooks.values())) for b in vit.backbone.vit.blocks]
    assert [h.p for h in hooks] == pytest.approx([0.0, 0.2]) and hooks[0].frames == T


# ---- EMA ------------------------------------------------------------------------------------------


def test_ema_follows_each_optimizer_step_and_is_swapped_in_for_evaluation_only():
    model = tiny()
    ema = TrainableEma(model, decay=0.5, warmup=False)
    step = TrainStep(model, torch.optim.SGD(trainable_groups(model, 0.5), lr=0.5), accumulate=2, ema=ema)
    batch = {"video": clips(2), "target": torch.tensor([0, 1])}
    trained = []
    for _ in range(2):  # two optimizer steps of two micro-batches each
        step(batch), step(batch)
        trained.append([p.detach().clone() for p in ema.params])
    assert ema.updates == 2  # per optimizer step, not per micro-batch
    expected = [0.5 * a + 0.5 * b for a, b in zip(*trained)]  # step 1 copies; step 2 halves the distance
    with ema.applied():
        for p, e in zip(ema.params, expected):
            torch.testing.assert_close(p.detach(), e)
    for p, t in zip(ema.params, trained[1]):
        assert torch.equal(p.detach(), t)  # the trained weights are back
    assert any(not torch.equal(a, b) for a, b in zip(expected, trained[1]))


def test_a_checkpoint_holds_the_ema_weights_and_a_resume_continues_the_ema(tmp_path):
    cfg = experiment("optim.ema_decay=0.9", "optim.ema_warmup=false")
    batch = {"video": clips(2), "target": torch.tensor([0, 1])}

    def run(model, regs, steps):
        opt = make_optimizer(trainable_groups(model, 0.1), 0.1, 0.0)
        sched = make_scheduler(opt, 10, 0, 1.0)
        step = TrainStep(model, opt, scheduler=sched, ema=regs.ema)
        for _ in range(steps):
            step(batch)
        return opt, sched

    model = tiny()
    regs = WorkerRegularisers(cfg, model, 3)
    opt, sched = run(model, regs, 3)
    extra = regs.checkpoint_files()
    with regs.evaluated():
        save_checkpoint(tmp_path, model, opt, sched, {"epoch": 0}, {}, extra=extra)
        ema_weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    saved = load_file(str(tmp_path / WEIGHTS))
    for name, value in ema_weights.items():
        assert torch.equal(saved[name], value)  # weights file (evaluate / export / predict): the EMA copy
    assert any(not torch.equal(saved[n], p) for n, p in model.named_parameters() if p.requires_grad)
    assert (tmp_path / EMA_FILE).exists()

    resumed = tiny()  # the same frozen backbone (a checkpoint holds the trainable weights only)
    regs2 = WorkerRegularisers(cfg, resumed, 3)
    opt2 = make_optimizer(trainable_groups(resumed, 0.1), 0.1, 0.0)
    sched2 = make_scheduler(opt2, 10, 0, 1.0)
    restore_checkpoint(tmp_path, resumed, opt2, sched2, {})
    regs2.restore(tmp_path)
    for (n, a), b in zip(((n, p) for n, p in model.named_parameters() if p.requires_grad), regs2.trainable):
        assert torch.equal(a, b), n  # training resumes from the trained weights, not the EMA
    for m, o, s, r in ((model, opt, sched, regs), (resumed, opt2, sched2, regs2)):
        torch.manual_seed(5)  # the same dropout draws
        TrainStep(m, o, scheduler=s, ema=r.ema)(batch)
    assert regs2.ema.updates == regs.ema.updates == 4
    for a, b in zip(regs.ema.ema.module.parameters(), regs2.ema.ema.module.parameters()):
        torch.testing.assert_close(a, b)  # the same EMA as the uninterrupted run


# ---- layer-wise LR decay --------------------------------------------------------------------------


def test_layer_decay_gives_each_block_its_depths_lr_and_the_schedule_keeps_the_ratios():
    model = tiny(adapters=(), finetune="full")  # 2 blocks: stem d^3, block 0 d^2, block 1 d, rest 1
    vit = model.backbone.vit
    groups = layer_decay_groups(model, trainable_groups(model, 1.0), 0.5, 1.0)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(vit.patch_embed.proj.weight)] == lr_of[id(vit.cls_token)] == pytest.approx(0.125)
    assert lr_of[id(vit.blocks[0].attn.qkv.weight)] == pytest.approx(0.25)
    assert lr_of[id(vit.blocks[1].mlp.fc2.bias)] == pytest.approx(0.5)
    assert lr_of[id(vit.norm.weight)] == lr_of[id(model.head[1].weight)] == 1.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    opt = make_optimizer(groups, 1.0, 0.05)
    sched = make_scheduler(opt, 10, 2, 0.1)
    for _ in range(4):
        opt.step(), step_scheduler(sched)
    lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
    assert lrs[0.125] / lrs[1.0] == pytest.approx(0.125)


def test_the_worker_builds_its_optimizer_groups_with_layer_decay_from_the_config():
    cfg = experiment("model.finetune=full", "model.adapters=[]", "optim.layer_decay=0.5")
    model = build_model(cfg.model, 3)
    opt, lr = optimizer_for(model, cfg.optim, cfg.data.batch_size)  # what the worker calls
    groups = opt.param_groups
    assert lr == cfg.optim.lr == 1e-3
    assert sorted(g["lr"] for g in groups) == pytest.approx([1.25e-4, 2.5e-4, 5e-4, 1e-3])
    assert groups[0]["lr"] == 1e-3  # the full-LR part first: the epoch line's lr is the run's peak


def test_layer_decay_keeps_a_groups_own_lr_and_places_swin_patch_merging_after_its_stage():
    model = tiny(BACKBONES["video_swin"], adapters=(), finetune="full")  # blocks: stage 0 x2, stage 1 x1
    swin = model.backbone.swin
    groups = layer_decay_groups(model, [{"params": list(swin.parameters()), "lr": 2.0}], 0.5, 1.0)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(swin.patch_embed.proj.weight)] == pytest.approx(2.0 * 0.5**4)
    assert lr_of[id(swin.features[1].reduction.weight)] == lr_of[id(swin.features[0][1].mlp[0].weight)] == pytest.approx(0.5)
    assert lr_of[id(swin.norm.weight)] == 2.0


# ---- RandAugment ----------------------------------------------------------------------------------


def test_rand_augment_applies_one_sampled_op_sequence_to_every_frame():
    frame = np.random.default_rng(0).integers(0, 256, (S, S, 3), dtype=np.uint8)
    clip = np.repeat(frame[None], T, axis=0)
    plain = ClipAugment(S, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    ra = ClipAugment(S, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, rand_augment="rand-m9-n2-mstd0.5")
    changed = 0
    for seed in range(12):
        out = ra(clip, np.random.default_rng(seed))
        assert all(np.array_equal(f, out[0]) for f in out)  # ops, magnitudes and signs drawn once per clip
        assert np.array_equal(out, ra(clip, np.random.default_rng(seed)))  # the seed fixes it
        changed += not np.array_equal(out, plain(clip, np.random.default_rng(seed)))
    assert changed >= 6


def test_the_decoder_actors_get_rand_augment_from_the_config():
    from pipelines.data.ingest import ClipDecoder, decode_settings

    cfg = experiment("data.augment=true", "data.rand_augment=rand-m7-n1", "model.head.num_outputs=3")
    assert ClipDecoder(decode_settings(cfg, training=True)).augment.rand_augment == "rand-m7-n1"
