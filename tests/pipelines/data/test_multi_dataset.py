"""Several datasets in one run: routing to heads, the loss, packed targets, the mixing ratio, per-dataset
metrics, config errors and checkpoints with several heads (the e2e run is test_multi_dataset_e2e.py)."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
import torch.nn.functional as F

from components.checkpoint import load_weights, save_weights, trainable_state_dict
from components.config import ConfigError, from_dict, resolve, to_dict
from components.data.manifest import write_manifest
from components.model import ModelConfig, build_model
from components.tasks import Heads, MetricAccumulator, make_task, task_loss
from pipelines.config import ExperimentConfig
from pipelines.data.multi_dataset import draw_indices, mix_counts, prepare_multi_dataset
from tests.conftest import TINY_VIT

HEADS = [
    {"name": "cls", "task": "single_label", "num_outputs": 3},
    {"name": "reg", "task": "regression", "num_outputs": 2},
    {"name": "tags", "task": "multi_label", "num_outputs": 5},
]
ADAPTERS = [{"type": "bottleneck", "bottleneck": 4}]


def model_config(heads=HEADS):
    return from_dict(ModelConfig, {"kind": "multi_dataset", "backbone": TINY_VIT, "adapters": ADAPTERS, "heads": heads})


def make_model(heads=HEADS, seed=0):
    """The same random frozen backbone every time; trainable weights drawn from ``seed``."""
    torch.manual_seed(0)
    model = build_model(model_config(heads), 5)
    torch.manual_seed(seed)
    with torch.no_grad():  # adapters away from their zero init, so they matter
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def batch():
    """Two clips per dataset, interleaved; targets packed to width 5."""
    index = torch.tensor([0, 1, 2, 0, 1, 2])
    target = torch.zeros(6, 5)
    target[0, 0], target[3, 0] = 2, 1  # class indices in column 0
    target[1, :2], target[4, :2] = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.0])
    target[2, [0, 4]], target[5, [1]] = 1.0, 1.0  # multi-hot
    torch.manual_seed(1)
    video = torch.randint(0, 256, (6, 4, 32, 32, 3), dtype=torch.uint8)
    return {"video": video, "dataset_index": index, "target": target}


# ---------------------------------------------------------------- model


def test_each_clip_goes_through_its_own_datasets_head():
    model, b = make_model(), batch()
    logits = model(b)["logits"]
    feats = model.features(b["video"])
    for i, d in enumerate(b["dataset_index"].tolist()):
        head = HEADS[d]
        expected = model.head[head["name"]](feats[i : i + 1])[0]
        torch.testing.assert_close(logits[i, : head["num_outputs"]], expected)
        assert (logits[i, head["num_outputs"]:] == 0).all()
    # changing one head moves its own clips only
    with torch.no_grad():
        model.head["reg"][1].bias.add_(1.0)
    moved = model(b)["logits"]
    changed = (moved != logits).any(dim=1)
    assert changed.tolist() == [d == 1 for d in b["dataset_index"].tolist()]


def test_loss_is_the_clip_weighted_mean_of_each_clips_task_loss():
    model, b = make_model(), batch()
    out = model(b)
    logits, t = out["logits"], b["target"]
    by_hand = (
        F.cross_entropy(logits[[0, 3], :3], torch.tensor([2, 1]), reduction="sum")
        + ((logits[[1, 4], :2] - t[[1, 4], :2]) ** 2).mean(dim=1).sum()
        + F.binary_cross_entropy_with_logits(logits[[2, 5]], t[[2, 5]], reduction="none").mean(dim=1).sum()
    ) / 6
    torch.testing.assert_close(out["loss"], by_hand)
    # a batch of one dataset: exactly that task's usual loss
    only_tags = {k: v[[2, 5]] for k, v in b.items()}
    out = model(only_tags)
    torch.testing.assert_close(out["loss"], task_loss("multi_label", out["logits"], only_tags["target"]))


def test_gradients_reach_the_shared_adapters_and_only_the_heads_in_the_batch():
    model, b = make_model().train(), batch()
    no_reg = {k: v[[0, 2, 3, 5]] for k, v in b.items()}
    model(no_reg)["loss"].backward()
    assert model.head["reg"][1].weight.grad is None
    assert model.head["cls"][1].weight.grad.abs().sum() > 0
    adapter_grads = [p.grad for n, p in model.named_parameters() if ".adapters." in n]
    assert adapter_grads and all(g is not None and g.abs().sum() > 0 for g in adapter_grads)


def test_packed_targets_round_trip():
    heads = Heads(6, [("a", make_task("single_label", 5)), ("b", make_task("multi_label", 4)),
                      ("c", make_task("regression", 2))])
    ids = ["x", "y", "z"]
    single = torch.from_numpy(heads.pack(0, pa.array([4, 0, 2]), ids))
    assert heads.tasks[0].from_dense(single).tolist() == [4, 0, 2]
    multi = torch.from_numpy(heads.pack(1, pa.array([[1, 3], [], [0]]), ids))
    assert heads.tasks[1].from_dense(multi).tolist() == [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]]
    reg = torch.from_numpy(heads.pack(2, pa.array([[0.5, -2.0]], pa.list_(pa.float32())), ids[:1]))
    assert heads.tasks[2].from_dense(reg).tolist() == [[0.5, -2.0]]
    assert reg.shape == (1, 6) and (reg[:, 2:] == 0).all()
    with pytest.raises(ValueError, match="clip y has class 4, but num_outputs is 4"):
        heads.pack(1, pa.array([[1], [4], []]), ids)


def test_checkpoint_round_trip_keeps_every_head(tmp_path):
    model = make_model()
    cfg = to_dict(model_config())
    state = trainable_state_dict(model)
    assert {k.split(".")[1] for k in state if k.startswith("head.")} == {"cls", "reg", "tags"}
    save_weights(tmp_path / "w.safetensors", state, cfg)
    fresh = make_model(seed=5)
    b = batch()
    assert not torch.allclose(fresh(b)["logits"], model(b)["logits"])
    load_weights(fresh, tmp_path / "w.safetensors", cfg)
    torch.testing.assert_close(fresh(b)["logits"], model(b)["logits"])
    # a model whose head differs does not load it, and says which key differs
    wider = [*HEADS[:2], {**HEADS[2], "num_outputs": 6}]
    with pytest.raises(ValueError, match=r"heads\.2\.num_outputs: checkpoint 5 vs current 6"):
        load_weights(make_model(wider), tmp_path / "w.safetensors", to_dict(model_config(wider)))


def test_weights_saved_with_or_without_the_old_heads_section_still_load(tmp_path):
    cfg = from_dict(ModelConfig, {"backbone": TINY_VIT, "adapters": ADAPTERS})
    model = build_model(cfg, 3)
    for n, old in enumerate([to_dict(cfg), {**to_dict(cfg), "heads": []}]):  # before model.heads existed / every
        save_weights(tmp_path / f"old{n}.safetensors", trainable_state_dict(model), old)  # kind's keys saved
        assert load_weights(build_model(cfg, 3), tmp_path / f"old{n}.safetensors", to_dict(cfg))


# ---------------------------------------------------------------- metrics


def test_metrics_per_dataset_match_a_plain_accumulator_on_each_datasets_rows():
    model, b = make_model(), batch()
    with torch.no_grad():
        out = model(b)
    heads = model_config().heads
    half = [Heads.from_configs(heads).accumulator(), Heads.from_configs(heads).accumulator()]
    for part, rows in zip(half, ([0, 1, 2], [3, 4, 5])):  # two "workers"
        part.route(b["dataset_index"][rows])
        part.update(out["logits"][rows], b["target"][rows], loss=1.0)
    half[0].merge(half[1])
    metrics = half[0].compute({"reg": ["speed", "size"]})
    plain = MetricAccumulator("single_label", 3)
    plain.update(out["logits"][[0, 3], :3], torch.tensor([2, 1]))
    assert metrics["cls_top1"] == plain.compute()["top1"]
    mse = ((out["logits"][[1, 4], :2] - b["target"][[1, 4], :2]) ** 2).mean(dim=0)
    assert metrics["reg_mse_speed"] == pytest.approx(float(mse[0]))
    assert metrics["reg_mse"] == pytest.approx(float(mse.mean()))
    assert 0 < metrics["tags_mAP"] <= 1 and metrics["loss"] == 1.0
    assert {"cls_loss", "reg_loss", "tags_loss"} <= set(metrics)
    assert not any(k.startswith(("top1", "mse", "mAP")) for k in metrics)  # nothing pooled across tasks


# ---------------------------------------------------------------- mixing


def test_mix_counts_follow_the_weights_and_add_up():
    assert mix_counts([10, 10], [1, 3], 100) == [25, 75]
    assert mix_counts([5, 5, 5], [1, 1, 1], 100) == [34, 33, 33]
    assert sum(mix_counts([1, 2, 3], [0.2, 0.7, 0.1], 997)) == 997


def test_draw_indices_repeats_a_small_dataset_evenly_and_subsamples_a_large_one():
    rng = np.random.default_rng(0)
    up = collections.Counter(draw_indices(4, 10, rng).tolist())
    assert sorted(up) == [0, 1, 2, 3] and sorted(up.values()) == [2, 2, 3, 3]
    down = draw_indices(10, 4, np.random.default_rng(0)).tolist()
    assert len(set(down)) == 4 and down == draw_indices(10, 4, np.random.default_rng(0)).tolist()


def manifest(path, n_train, n_val, classes=3, regression=None, feature=True):
    rows = []
    for i in range(n_train + n_val):
        row = {"clip_id": f"c{i}", "video_path": f"v{i}.mp4", "split": "train" if i < n_train else "val",
               "dataset": "synthetic_motion", "label": i % classes}
        if regression:
            row["regression"] = [float(i)] * regression
        if feature:
            row["feat_audio"] = [float(i)] * 4
        rows.append(row)
    return write_manifest(path, rows, [f"k{c}" for c in range(classes)])


def experiment(tmp_path, *overrides, datasets=None):
    a = manifest(tmp_path / "a.parquet", 8, 3, classes=4)
    b = manifest(tmp_path / "b.parquet", 4, 2, regression=2, feature=False)
    datasets = datasets or [{"name": "motion", "manifest": str(a), "task": "single_label", "weight": 1.0},
                            {"name": "speed", "manifest": str(b), "task": "regression", "weight": 1.0}]
    return resolve(ExperimentConfig, [], ["data.check_files=false", f"data.datasets={datasets}",
                                          "model.modalities=[{name: audio}]", *overrides])


def test_combined_manifest_has_the_mix_heads_and_packed_targets(tmp_path):
    cfg, combined = prepare_multi_dataset(experiment(tmp_path, "data.mix_epoch_clips=15",
                                                      "data.datasets.1.weight=2.0"))
    assert cfg.model.kind == "multi_dataset" and cfg.model.head.num_outputs == 4
    assert [(h.name, h.task, h.num_outputs) for h in cfg.model.heads] == [("motion", "single_label", 4),
                                                                          ("speed", "regression", 2)]
    train = combined.split("train")
    per_dataset = collections.Counter(train["dataset"].to_pylist())
    assert per_dataset == {"motion": 5, "speed": 10}  # 15 clips at 1:2; speed has 4 clips, drawn 2-3 times
    speed_ids = collections.Counter(i for i in train["clip_id"].to_pylist() if i.startswith("speed/"))
    assert sorted(speed_ids.values()) == [2, 2, 3, 3]
    rows = train.to_pylist()
    for row in rows:
        k = int(row["clip_id"].split("/c")[1])
        expected = [k % 4, 0, 0, 0] if row["dataset"] == "motion" else [float(k), float(k), 0, 0]
        assert row[Heads.column] == expected  # packed: class index in column 0 / the values, zero-padded
        assert (row["feat_audio"] is None) == (row["dataset"] == "speed")  # no audio in speed: masked
    val = combined.split("val")
    assert val["dataset"].to_pylist()[:4] == ["motion", "speed", "motion", "speed"]  # interleaved: any prefix has both
    assert pc.count_distinct(val["clip_id"]).as_py() == 5
    assert combined.extra_metadata["dataset_target_names"] == {"speed": []}


@pytest.mark.parametrize("override, message", [
    ("data.datasets=[{name: a, manifest: x.parquet}, {name: a, manifest: y.parquet}]",
     r"data: datasets\.1\.name: 'a' is already"),
    ("data.datasets=[{name: a, manifest: x.parquet, wieght: 2}]", r"unknown key\(s\) data\.datasets\.0\.wieght"),
    ("data.datasets=[{name: a, manifest: x.parquet, weight: 0}]", r"data\.datasets\.0: weight must be positive"),
    ("data.datasets=[{name: a.b, manifest: x.parquet}]", r"data\.datasets\.0: name must be"),
    ("data.datasets=[{name: a, manifest: x.parquet, task: ranking}]", r"data\.datasets\.0: task must be"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(ExperimentConfig, [], [override])


def test_manifest_and_datasets_together_are_refused():
    with pytest.raises(ConfigError, match="manifest or datasets, not both"):
        resolve(ExperimentConfig, [], ["data.manifest=m.parquet", "data.datasets=[{name: a, manifest: x.parquet}]"])


def test_start_up_errors_name_the_dataset_and_file(tmp_path):
    cfg = experiment(tmp_path, f"data.datasets.1.manifest={tmp_path / 'missing.parquet'}")
    with pytest.raises(ConfigError, match=r"data\.datasets\.1 \(speed\): .*missing\.parquet: manifest file not found"):
        prepare_multi_dataset(cfg)
    cfg = experiment(tmp_path, "data.datasets.1.num_outputs=3")
    with pytest.raises(ConfigError, match=r"data\.datasets\.1 \(speed\): clip c\d+ has 2 regression targets, "
                                          r"expected 3"):
        prepare_multi_dataset(cfg)
    cfg = experiment(tmp_path, "data.datasets.0.train_split=test")
    with pytest.raises(ConfigError, match=r"data\.datasets\.0 \(motion\): split 'test' of .*a\.parquet has no rows"):
        prepare_multi_dataset(cfg)
    cfg = experiment(tmp_path, "data.datasets.0.weight=0.01")
    with pytest.raises(ConfigError, match=r"data\.datasets\.0\.weight: 0\.01 gives motion no clip"):
        prepare_multi_dataset(cfg)
    cfg = experiment(tmp_path, "model.kind=m2clip")
    with pytest.raises(ConfigError, match=r"model\.kind: 'm2clip'"):
        prepare_multi_dataset(cfg)
