"""M2-CLIP on a tiny random-init CLIP: adapters (TED, text, CMLM) are identities at init, TED's
branches are wired over time/space as specified, every loss matches a hand computation, CMLM with
nothing masked is exactly zero, parameter counts match a hand count, zero-shot and the class-text cache."""

from __future__ import annotations

import math
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from components.adapters.base import ForwardContext, SiteInfo, TokenLayout
from components.adapters.ted import TEDAdapter, TEDConfig
from components.checkpoint import save_weights, trainable_state_dict
from components.config import ConfigError, from_dict, load_yaml
from components.m2clip import M2ClipConfig
from components.m2clip.cmlm import mask_label_tokens
from components.m2clip.losses import (
    contrastive_kl_loss,
    cross_modal_classification_loss,
    cross_modal_logits,
    masked_lm_loss,
)
from components.model import ModelConfig, build_model, parameter_counts

T, S = 4, 32
TINY = {"family": "openclip_vit", "name": "vidpeft-tiny-clip", "img_size": S, "num_frames": T}
NAMES = ["running", "jumping", "swimming"]  # one BPE token each
TED = {"type": "ted", "bottleneck": 8}
TEXT = {"type": "text_adapter", "bottleneck": 8}
PRESETS = Path(__file__).resolve().parents[3] / "pipelines" / "configs" / "presets" / "m2clip"


def make(adapters=(TED,), text_adapters=(TEXT,), names=NAMES, seed=0, **m2clip):
    torch.manual_seed(seed)
    cfg = from_dict(ModelConfig, {
        "kind": "m2clip", "backbone": TINY, "adapters": list(adapters),
        "m2clip": {"text_adapters": list(text_adapters), "cmlm_adapter_width": 8, **m2clip},
    })
    return build_model(cfg, len(names), list(names))


def clip_video(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, T, S, S, 3), dtype=torch.uint8, generator=g)


# ---- identity at init ------------------------------------------------------------------------


def test_every_adapter_is_identity_at_init():
    frozen = make(adapters=[], text_adapters=[])
    adapted = make(
        adapters=[TED, {**TED, "name": "ted_mlp", "sites": ["pre_mlp"]}],
        text_adapters=[{**TEXT, "layers": []}, {**TEXT, "name": "pre_attn", "sites": ["pre_attn"]}],
    )
    video = clip_video()
    with torch.no_grad():
        assert torch.equal(frozen.encode_video(video)[0], adapted.encode_video(video)[0])
        ids = frozen.prompt_ids[0]
        assert torch.equal(frozen.text.encode_tokens(ids), adapted.text.encode_tokens(ids))
        tokens, frames = torch.randn(2, 5, 32), torch.randn(2, T, 32)
        # CMLM block = frozen copy of the last text block, its adapter silent at init
        last = frozen.text.transformer.resblocks[-1]
        assert torch.equal(adapted.cmlm.block(tokens, frames), last(tokens, frames))


# ---- TED ------------------------------------------------------------------------------------


def ted_layer(dim=4, bottleneck=4, grid=(2, 2), frames=3, **kw) -> TEDAdapter:
    context = ForwardContext()
    context.set(num_frames=frames)
    site = SiteInfo(path="blocks.0.pre_attn", site="pre_attn", block_index=0, dim=dim, num_heads=1, family="test",
                    layout=TokenLayout(kind="frames", grid=grid, num_prefix_tokens=1), context=context,
                    base=nn.Identity())
    return TEDAdapter(TEDConfig(bottleneck=bottleneck, **kw), site)


def test_ted_difference_branch_is_zero_for_a_static_video():
    torch.manual_seed(0)
    ted = ted_layer(dim=8, bottleneck=4)
    with torch.no_grad():
        for p in ted.parameters():  # any weights, not only the zero init
            p.normal_()
        frame = torch.randn(5, 8)  # 1 class + 2x2 patch tokens
        static = rearrange(repeat(frame, "n c -> b t n c", b=2, t=3), "b t n c -> (b t) n c")
        assert torch.equal(ted.difference(static[:, 1:], 3, (2, 2)), torch.zeros(6, 4, 8))
        assert torch.allclose(ted(static, static), ted.enhance(static, 3))  # TD adds nothing
        moving = torch.randn(6, 5, 8)
        td = rearrange(ted.difference(moving[:, 1:], 3, (2, 2)), "(b t) n c -> b t n c", t=3)
        assert torch.equal(td[:, 0], torch.zeros(2, 4, 8))  # first frame: zero difference
        assert td[:, 1:].abs().min() > 0


def test_ted_branches_mix_time_and_space_as_specified():
    ted = ted_layer(dim=4, bottleneck=4)
    with torch.no_grad():
        for branch in (ted.enhance, ted.difference):
            branch.fc1.weight.copy_(torch.eye(4))
            branch.fc2.weight.copy_(torch.eye(4))
        ted.enhance.conv.weight.zero_()
        ted.enhance.conv.weight[:, 0, 0] = 1.0  # out[t] = h[t-1]: previous frame, 0 for t=0
        ted.difference.conv.weight.zero_()
        ted.difference.conv.weight[:, 0, 1, 1] = 1.0  # centre tap: the difference itself
        x = torch.randn(2 * 3, 5, 4)
        z = rearrange(x, "(b t) n c -> b t n c", t=3)
        previous = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)
        expected_te = previous  # every token, class token included
        expected_td = torch.cat([z[:, :1] * 0, z[:, 1:] - z[:, :-1]], dim=1)
        expected_td[:, :, 0] = 0  # class token gets no difference
        expected = rearrange(expected_te + expected_td, "b t n c -> (b t) n c")
        assert torch.allclose(ted(x, x), expected, atol=1e-6)


def test_ted_config_validation():
    with pytest.raises(ValueError):
        TEDConfig(enhancement=False, difference=False)
    with pytest.raises(ValueError):
        TEDConfig(temporal_kernel=2)
    only_te = ted_layer(difference=False)
    assert only_te.difference is None and only_te.enhance is not None


# ---- losses, each against a hand computation -------------------------------------------------


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def _kl_rows(logits, target):
    total = 0.0
    for row, t in zip(logits, target):
        p = _softmax(row)
        total += sum(ti * math.log(ti / pi) for ti, pi in zip(t, p) if ti > 0)
    return total / len(logits)


def test_contrastive_kl_loss_by_hand():
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # prompts of labels 0, 0, 1
    labels = torch.tensor([0, 0, 1])
    v2t = [[2.0, 2.0, 0.0], [0.0, 0.0, 2.0], [1.2, 1.2, 1.6]]  # 2 * cos(v_i, w_j)
    t2v = [list(col) for col in zip(*v2t)]
    target = [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]  # same label = positive, rows normalised
    expected = (_kl_rows(v2t, target) + _kl_rows(t2v, target)) / 2
    got = contrastive_kl_loss(video, text, labels, torch.tensor(2.0))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.8313, abs=1e-4)  # (0.8208 + 0.8418) / 2, worked out on paper


def test_cross_modal_classification_by_hand():
    video = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    logits = cross_modal_logits(video, classes, torch.tensor(10.0))
    assert torch.allclose(logits, torch.tensor([[10.0, 0.0, -10.0], [6.0, 8.0, -6.0]]))
    expected = (-math.log(_softmax([10.0, 0.0, -10.0])[0]) - math.log(_softmax([6.0, 8.0, -6.0])[1])) / 2
    loss = cross_modal_classification_loss(logits, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)  # on logits, not on softmaxed scores


def test_masked_lm_loss_by_hand_and_when_nothing_is_masked():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], requires_grad=True)
    expected = (-math.log(_softmax([1.0, 2.0, 0.5])[0]) - math.log(_softmax([0.0, 0.0, 3.0])[2])) / 2
    assert masked_lm_loss(logits, torch.tensor([0, 2])).item() == pytest.approx(expected, rel=1e-6)
    empty = torch.zeros(0, 3, requires_grad=True)
    loss = masked_lm_loss(empty * 2, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert empty.grad is not None and empty.grad.numel() == 0


def test_mask_label_tokens():
    ids = torch.tensor([[1, 10, 11, 2, 0], [1, 12, 2, 0, 0]])
    is_label = torch.tensor([[False, True, True, False, False], [False, True, False, False, False]])
    masked_ids, masked = mask_label_tokens(ids, is_label, 1.0, True, 99)
    assert torch.equal(masked, is_label) and torch.equal(masked_ids, torch.where(is_label, 99, ids))
    _, none = mask_label_tokens(ids, is_label, 0.0, True, 99)
    assert not none.any()  # probability 0 masks nothing, even with at_least_one
    torch.manual_seed(0)
    _, one = mask_label_tokens(ids, is_label, 1e-9, True, 99)
    assert one.sum(dim=1).tolist() == [1, 1] and not (one & ~is_label).any()


def test_model_loss_is_the_weighted_sum_of_its_parts():
    model = make(contrastive_weight=0.3, cmc_weight=0.7, cmlm_weight=0.2, vc_weight=1.5)
    out = model({"video": clip_video(), "target": torch.tensor([0, 2])})
    parts = {k.split("/")[1]: v for k, v in out.items() if k.startswith("loss/")}
    assert set(parts) == {"contrastive", "cmc", "cmlm", "vc"}
    expected = 0.3 * parts["contrastive"] + 0.7 * parts["cmc"] + 0.2 * parts["cmlm"] + 1.5 * parts["vc"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["logits"].shape == (2, 3)
    model.eval()  # no dropout: VC = cross-entropy of the linear head on v; CMC = cross-entropy of Eq. 11 logits
    y = torch.tensor([0, 2])
    out = model({"video": clip_video(), "target": y})
    with torch.no_grad():
        v = model.encode_video(clip_video())[1]
        classes = model.class_embeddings(NAMES, model.eval_templates)
        xm = cross_modal_logits(F.normalize(v, dim=-1), classes, model.logit_scale)
        assert out["loss/vc"].item() == pytest.approx(F.cross_entropy(model.vc_head(v), y).item(), rel=1e-5)
        assert out["loss/cmc"].item() == pytest.approx(F.cross_entropy(xm, y).item(), rel=1e-5)
        assert torch.allclose(out["logits"], model.vc_head(v), atol=1e-6)
    off = make(contrastive=False, cmc=False, cmlm=False, vc=False, eval_head="xm")
    out = off({"video": clip_video(), "target": torch.tensor([0, 2])})
    assert out["loss"].item() == 0.0 and not any(k.startswith("loss/") for k in out)


def test_cmlm_with_nothing_masked_contributes_exactly_zero():
    model = make(cmlm_mask_prob=0.0)
    out = model({"video": clip_video(), "target": torch.tensor([0, 1])})
    assert out["loss/cmlm"].item() == 0.0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.cmlm.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.count_nonzero(g) == 0 for g in grads)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    masked = make(cmlm_mask_prob=1.0)
    out = masked({"video": clip_video(), "target": torch.tensor([0, 1])})
    assert out["loss/cmlm"].item() > 0  # real masking: ln(3)-ish for a random head over 3 label tokens


# ---- parameters -----------------------------------------------------------------------------


def test_trainable_parameter_count_matches_hand_count():
    model = make()
    d, r, k = 32, 8, 3  # tiny CLIP width (visual = text = embed), bottlenecks, TE kernel
    te = (d * r + r) + (r * k + r) + (r * d + d)  # fc1, depthwise Conv1d, fc2
    td = d * r + r * 3 * 3 + r * d  # bias-free fc1, depthwise 3x3, fc2
    text_adapter = (d * r + r) + (r * d + d)
    vc = d * 3 + 3
    vocab = 3  # "running", "jumping", "swimming": one token each
    mlm_head = (d * d + d) + 2 * d + (d * vocab + vocab)  # dense, LayerNorm, decoder
    hand = 2 * (te + td) + text_adapter + vc + text_adapter + mlm_head  # 2 visual blocks; text + CMLM adapters
    counts = parameter_counts(model)
    assert counts["trainable_params"] == hand == 2336 + 552 + 99 + 552 + 1219
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad and not n.startswith("cmlm."))
    assert counts["backbone_params"] == frozen  # both CLIP towers
    groups = model.param_groups(1e-3)
    by_name = {g["name"]: g for g in groups}
    assert sum(p.numel() for p in by_name["text"]["params"]) == 2 * text_adapter
    assert by_name["text"]["lr"] == pytest.approx(5e-4) and by_name["main"]["lr"] == pytest.approx(1e-3)
    assert sum(p.numel() for g in groups for p in g["params"]) == hand
    assert parameter_counts(make(adapters=[], text_adapters=[], contrastive=False, cmc=False, cmlm=False,
                                 vc=False, eval_head="xm"))["trainable_params"] == 0


# ---- zero-shot and the class-text cache ---------------------------------------------------------


def test_zero_shot_logits_and_cache_with_frozen_text():
    model = make(text_adapters=[]).eval()
    video = clip_video(3)
    new = ["archery", "juggling balls"]
    a = model.zero_shot_logits(video, new)
    assert a.shape == (3, 2)
    # Eq. 11 by hand with open_clip's own tokenizer on the whole prompt
    ids = open_clip.get_tokenizer("vidpeft-tiny-clip")([f"a video of {n}" for n in new])
    with torch.no_grad():
        w = F.normalize(model.text(ids), dim=-1)
        v = F.normalize(model.encode_video(video)[1], dim=-1)
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert torch.allclose(a, model.logit_scale * v @ w.t(), atol=1e-5)
    calls = model.text_encode_calls
    assert torch.equal(model.zero_shot_logits(video, new), a) and model.text_encode_calls == calls  # cached
    two = model.zero_shot_logits(video, new, ["a video of {}", "a photo of {}"])
    assert two.shape == (3, 2) and model.text_encode_calls == calls + 1
    model.train()  # frozen text path: class texts encoded once, reused across training steps
    calls = model.text_encode_calls
    for _ in range(2):
        model({"video": video, "target": torch.tensor([0, 1, 2])})["loss"].backward()
    assert model.text_encode_calls == calls + 1


def test_class_texts_recomputed_while_text_adapters_train():
    model = make()
    batch = {"video": clip_video(), "target": torch.tensor([0, 2])}
    calls = model.text_encode_calls
    model.train()
    for _ in range(2):
        model(batch)["loss"].backward()
    assert model.text_encode_calls == calls + 2  # gradients must reach the text adapter
    model.eval()
    with torch.no_grad():
        model(batch)
        model(batch)
    assert model.text_encode_calls == calls + 3  # evaluation: cached
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    opt.step()  # text adapter weights change in place -> cache invalid
    with torch.no_grad():
        model(batch)
    assert model.text_encode_calls == calls + 4


def test_eval_heads():
    batch = {"video": clip_video(4)}
    for head in ("vc", "xm", "both"):
        logits = make(eval_head=head).eval()(batch)["logits"]
        assert logits.shape == (4, 3) and torch.isfinite(logits).all()
        if head == "both":
            assert torch.allclose(logits.exp().sum(dim=1), torch.ones(4), atol=1e-5)


def test_transfer_weights_load_into_a_model_for_other_classes(tmp_path):
    trained = make()
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.01)
    path = tmp_path / "weights.safetensors"
    save_weights(path, trainable_state_dict(trained))
    other = make(names=["archery", "juggling balls"], seed=0)
    loaded = other.load_transfer_weights(path)
    assert loaded and all(".adapters." in k for k in loaded)
    video = clip_video()
    names = ["archery", "juggling balls"]
    assert torch.allclose(other.zero_shot_logits(video, names), trained.zero_shot_logits(video, names), atol=1e-5)


# ---- configuration and presets ----------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValueError):
        M2ClipConfig(vc=False)  # eval_head=vc needs the VC head
    with pytest.raises(ValueError):
        M2ClipConfig(templates=["no placeholder"])
    with pytest.raises(ConfigError):
        from_dict(ModelConfig, {"m2clip": {"loss_weights": 1}})
    with pytest.raises(ConfigError):
        build_model(from_dict(ModelConfig, {"kind": "m2clip", "backbone": TINY}), 3, None)  # needs class names
    with pytest.raises(ConfigError):
        build_model(from_dict(ModelConfig, {"kind": "m2clip"}), 3, NAMES)  # timm backbone


def test_presets_parse_and_the_full_preset_builds_on_a_tiny_clip():
    files = sorted(PRESETS.glob("*.yaml"))
    assert {"zeroshot_frozen", "ted", "ted_text", "m2clip_full"} <= {f.stem for f in files}
    for f in files:
        data = load_yaml(f)
        assert "model" in data and set(data) <= {"model", "extends", "sources"}, f  # the recipe: extends
        cfg = from_dict(ModelConfig, data["model"])
        assert cfg.kind == "m2clip" and cfg.backbone.checkpoint is None and cfg.backbone.name.startswith("ViT-B-16")
    full = load_yaml(PRESETS / "m2clip_full.yaml")["model"]
    full["backbone"] = TINY
    model = build_model(from_dict(ModelConfig, full), 3, NAMES)
    out = model({"video": clip_video(), "target": torch.tensor([0, 1])})
    assert set(out) == {"logits", "loss", "loss/contrastive", "loss/cmc", "loss/cmlm", "loss/vc"}


def test_training_reuses_the_frozen_text_blocks_and_matches_the_full_tower():
    """With text adapters in the last block only, the blocks before it see the same prompts and
    frozen weights at every step: they run once, and the embeddings and gradients are those of
    the whole tower run with gradients."""
    model = make()
    model.train()
    text = model.text
    start = text.frozen_prefix_length()
    blocks = len(text.transformer.resblocks)
    assert 0 < start < blocks  # the default: text adapters in the last N=1 block(s)
    runs = []
    hook = text.transformer.resblocks[0].register_forward_hook(lambda *a: runs.append(1))
    names, templates = model.class_names, model.templates
    fast = model._encode_prompts(names, templates, chunk=None)
    fast = model._encode_prompts(names, templates, chunk=None)  # second step: block 0 not rerun
    assert len(runs) == 1
    hook.remove()
    flat = rearrange(model.prompt_ids, "k c l -> (k c) l")
    full = F.normalize(text(flat), dim=-1)  # the whole tower with gradients
    torch.testing.assert_close(rearrange(fast, "k c d -> (k c) d"), full, atol=1e-6, rtol=1e-5)
    adapter_params = [p for p in text.parameters() if p.requires_grad]
    g_fast = torch.autograd.grad(fast.square().sum() + fast.sum(), adapter_params)
    g_full = torch.autograd.grad(full.square().sum() + full.sum(), adapter_params)
    for a, b in zip(g_fast, g_full):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # frozen weights changed in place (e.g. a loaded checkpoint): the cached prefix is recomputed
    with torch.no_grad():
        text.transformer.resblocks[0].ln_1.weight.mul_(1.5)
    runs.clear()
    hook = text.transformer.resblocks[0].register_forward_hook(lambda *a: runs.append(1))
    model._encode_prompts(names, templates, chunk=None)
    assert len(runs) == 1
    hook.remove()


def test_prompts_run_at_their_real_length_with_the_embeddings_of_the_padded_ones():
    """CLIP pads every prompt to 77 tokens; behind the causal mask the padding never reaches the EOT
    token, so the tower runs only up to the longest prompt's EOT, with the same embeddings and
    gradients as the padded prompts."""
    model = make()
    model.train()
    text = model.text
    k, c, length = model.prompt_ids.shape
    padded = torch.zeros(k * c, text.context_length, dtype=torch.long)
    padded[:, :length] = rearrange(model.prompt_ids, "k c l -> (k c) l")
    assert length < text.context_length and (padded[:, length - 1] != 0).any()  # cut right after the last EOT
    short = F.normalize(text(padded[:, :length]), dim=-1)
    full = F.normalize(text(padded), dim=-1)
    torch.testing.assert_close(short, full, atol=1e-6, rtol=1e-5)
    params = [p for p in text.parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad(short.sum() + short.square().sum(), params),
                    torch.autograd.grad(full.sum() + full.square().sum(), params)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    text.attn_mask = None  # a tower without a causal mask: padding is attended to, so nothing is cut
    assert text.used_length(padded) == text.context_length
