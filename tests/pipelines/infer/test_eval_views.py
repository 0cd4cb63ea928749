"""Multi-view evaluation in the pipelines: the decoder's (n, V, ...) clips, flattening views into the
batch (side inputs and targets repeated per view), per-video score averaging before the metrics, and
the checks on the config keys that switch it (and the zero-shot close) on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from einops import repeat

from components.config import ConfigError, from_dict, resolve
from components.model import ModelConfig, build_model
from components.tasks import MetricAccumulator
from pipelines.data.eval_views import ViewAveraged, flatten_views, video_scores
from tests.conftest import TINY_VIT


def tiny_classifier(task="single_label", num_outputs=3, modalities=()):
    torch.manual_seed(0)
    config = from_dict(ModelConfig, {"backbone": TINY_VIT, "head": {"task": task},
                                     "modalities": [{"name": n, "dim": 4} for n in modalities],
                                     "adapters": [{"type": "bottleneck", "bottleneck": 4}]})
    return build_model(config, num_outputs).eval()


def clips(b, seed=0):
    return torch.randint(0, 256, (b, 4, 32, 32, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


class Recorder(torch.nn.Module):
    """A stand-in model: logits chosen per clip by its first pixel; records the batch it was given."""

    def __init__(self, table: dict[int, list[float]]) -> None:
        super().__init__()
        self.table, self.seen = table, None

    def forward(self, batch):
        self.seen = batch
        logits = torch.tensor([self.table[int(v[0, 0, 0, 0])] for v in batch["video"]])
        return {"logits": logits, "loss": torch.tensor(0.5)}


def test_flatten_repeats_side_inputs_and_targets_per_view():
    b, v = 2, 3
    video = torch.arange(b * v, dtype=torch.uint8).view(b, v, 1, 1, 1, 1).expand(b, v, 4, 8, 8, 3)
    batch = {"video": video, "target": torch.tensor([7, 9]), "side_audio": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
             "side_audio_mask": torch.tensor([True, False])}
    flat, views = flatten_views(batch)
    assert views == 3 and flat["video"].shape == (6, 4, 8, 8, 3)
    assert flat["video"][:, 0, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]  # video-major, views consecutive
    assert flat["target"].tolist() == [7, 7, 7, 9, 9, 9]
    assert flat["side_audio"].tolist() == [[1.0, 2.0]] * 3 + [[3.0, 4.0]] * 3
    assert flat["side_audio_mask"].tolist() == [True] * 3 + [False] * 3
    single = {"video": clips(2), "target": torch.tensor([0, 1])}
    assert flatten_views(single) == (single, 1)  # one view per video: untouched


@pytest.mark.parametrize("task", ["single_label", "multi_label", "regression"])
def test_identical_views_score_like_a_single_view(task):
    model = tiny_classifier(task, modalities=("audio",))
    video = clips(3)
    side = {"side_audio": torch.randn(3, 4), "side_audio_mask": torch.tensor([True, False, True])}
    target = {"single_label": torch.tensor([0, 2, 1]), "multi_label": torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0]]),
              "regression": torch.randn(3, 3)}[task]
    single_batch = {"video": video, "target": target, **side}
    multi_batch = {**single_batch, "video": repeat(video, "b t h w c -> b v t h w c", v=4)}  # 4 identical views
    with torch.no_grad():
        single = model(single_batch)
        multi = ViewAveraged(model, task)(multi_batch)
    assert multi["logits"].shape == single["logits"].shape == (3, 3)
    if task == "single_label":
        assert torch.allclose(multi["logits"].softmax(-1), single["logits"].softmax(-1), atol=1e-5)
    elif task == "multi_label":
        assert torch.allclose(multi["logits"].sigmoid(), single["logits"].sigmoid(), atol=1e-5)
    else:
        assert torch.allclose(multi["logits"], single["logits"], atol=1e-5)
    assert torch.allclose(multi["loss"], single["loss"], atol=1e-5)
    accs = []
    for out in (single, multi):
        acc = MetricAccumulator(task, 3)
        acc.update(out["logits"], target, float(out["loss"]))
        accs.append(acc.compute())
    assert accs[0].keys() == accs[1].keys()
    for k in accs[0]:
        assert accs[1][k] == pytest.approx(accs[0][k], abs=1e-5), k


def test_side_features_reach_the_model_once_per_view():
    model = Recorder({1: [0.0, 1.0], 2: [1.0, 0.0]})
    video = torch.ones(2, 2, 4, 8, 8, 3, dtype=torch.uint8)
    batch = {"video": video, "target": torch.tensor([1, 0]), "side_flow": torch.tensor([[5.0], [6.0]]),
             "side_flow_mask": torch.tensor([False, True])}
    out = ViewAveraged(model, "single_label")(batch)
    assert model.seen["video"].shape == (4, 4, 8, 8, 3)
    assert model.seen["side_flow"].view(-1).tolist() == [5.0, 5.0, 6.0, 6.0]
    assert model.seen["side_flow_mask"].tolist() == [False, False, True, True]
    assert model.seen["target"].tolist() == [1, 1, 0, 0]
    assert out["logits"].shape == (2, 2)


def test_averaging_views_can_change_the_prediction():
    # Video 0's centre view (pixel 2) leans to class 1; its other view (pixel 1) is sure of class 0.
    model = Recorder({1: [8.0, 0.0, 0.0], 2: [0.0, 1.0, 0.0]})
    video = torch.empty(1, 2, 4, 8, 8, 3, dtype=torch.uint8)
    video[:, 0], video[:, 1] = 1, 2
    target = torch.tensor([0])
    centre_only = model({"video": video[:, 1]})["logits"]
    averaged = ViewAveraged(model, "single_label")({"video": video, "target": target})["logits"]
    assert centre_only.argmax(-1).item() == 1 and averaged.argmax(-1).item() == 0
    probs = (torch.tensor([[8.0, 0, 0]]).softmax(-1) + torch.tensor([[0.0, 1, 0]]).softmax(-1)) / 2
    assert torch.allclose(averaged.exp(), probs, atol=1e-6)  # the mean of softmaxes, as a log
    scores = []
    for logits in (centre_only, averaged):
        acc = MetricAccumulator("single_label", 3)
        acc.update(logits, target)
        scores.append(acc.compute()["top1"])
    assert scores == [0.0, 1.0]


def test_multi_label_and_regression_scores_are_view_means():
    logits = torch.tensor([[2.0, -1.0], [-2.0, 3.0], [0.0, 0.0], [4.0, 4.0]])  # 2 videos x 2 views
    ml = video_scores(logits, 2, "multi_label")
    expected = (logits.sigmoid()[0::2] + logits.sigmoid()[1::2]) / 2
    assert torch.allclose(ml.sigmoid(), expected, atol=1e-6)
    assert torch.allclose(video_scores(logits, 2, "regression"), (logits[0::2] + logits[1::2]) / 2)
    with pytest.raises(ValueError, match="multiple of 3 views"):
        video_scores(logits, 3, "single_label")


def test_eval_decoder_emits_views_per_video_and_side_inputs_per_clip(synth_data):
    from components.data.manifest import read_manifest
    from components.video.decode import ClipSpec, decode_clip
    from components.video.sampling import multiview_indices
    from components.video.transforms import multi_crop
    from pipelines.data.ingest import ClipDecoder, DecodeSettings, ModalityColumn

    rows = read_manifest(synth_data).split("val").slice(0, 3).to_pydict()
    batch = {k: np.array(v, dtype=object) for k, v in rows.items()}
    base = dict(num_frames=4, size=24, sampling="uniform", stride=2, seed=0, task="single_label", num_outputs=4,
                decode_scale=1.25, modalities=(ModalityColumn("audio", "feat_audio", 8),), eval_clips=2, eval_crops=3)
    ev = ClipDecoder(DecodeSettings(training=False, **base))(batch)
    assert ev["video"].shape == (3, 6, 4, 24, 24, 3) and ev["ok"].all()
    assert ev["target"].shape == (3,) and ev["side_audio"].shape == (3, 8) and ev["side_audio_mask"].shape == (3,)
    # view 1 = clip 0, crop 1 (the centre) of a 30 px decode
    frames = multiview_indices(0, 16, 4, 2)[0]
    full = decode_clip(rows["video_path"][0], ClipSpec(num_frames=4, size=30), indices_fn=lambda s, e: frames)
    assert np.array_equal(ev["video"][0, 1], multi_crop(full, 24, 3)[1])
    assert not np.array_equal(ev["video"][0, 0], ev["video"][0, 2])  # left and right crops differ
    train = ClipDecoder(DecodeSettings(training=True, **base))(batch)
    assert train["video"].shape == (3, 4, 24, 24, 3)  # training clips: one view


@pytest.mark.parametrize("override", ["eval_clips=0", "eval_crops=0", "eval_crops=3"])
def test_data_config_rejects_bad_view_counts(override):
    from pipelines.config import DataConfig

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        resolve(DataConfig, [], [override, "decode_scale=1.0"])
    assert resolve(DataConfig, [], ["eval_crops=3"]).eval_crops == 3  # the default decode_scale is > 1


def test_zero_shot_close_is_checked_before_training(synth_data, tmp_path):
    from pipelines.config import ExperimentConfig
    from pipelines.infer.zeroshot_close import prepare

    assert prepare(resolve(ExperimentConfig, [], [])) is None  # off by default
    with pytest.raises(ConfigError, match=r"zeroshot\.manifest.*model\.kind"):
        prepare(resolve(ExperimentConfig, [], [f"zeroshot.manifest={synth_data}"]))
    m2clip = ["model.kind=m2clip", f"zeroshot.manifest={synth_data}"]
    with pytest.raises(ConfigError, match=r"zeroshot\.templates"):
        prepare(resolve(ExperimentConfig, [], [*m2clip, "zeroshot.templates=[a video of]"]))
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\n")
    with pytest.raises(ConfigError, match="names 2"):
        prepare(resolve(ExperimentConfig, [], [*m2clip, f"zeroshot.classes={classes}"]))
    held_out = prepare(resolve(ExperimentConfig, [], [*m2clip, "zeroshot.split=val"]))
    assert len(held_out.names) == 4 and held_out.table.num_rows > 0  # names from the manifest's metadata
