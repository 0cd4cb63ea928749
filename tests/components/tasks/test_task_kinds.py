"""Each Task kind on its own: target decoding (one cell and a whole column), loss, accumulator,
view averaging and output size from the manifest; and the registry that makes a new kind one line."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from components.tasks import TASKS, Heads, MultiLabel, Regression, SingleLabel, make_task
from components.tasks.base import TASK_KINDS, Task, register_task

IDS = ["a", "b", "c"]


def manifest(num_classes=5):
    return SimpleNamespace(num_classes=num_classes, path="m.parquet")


def test_single_label():
    t = SingleLabel(4)
    assert (t.column, make_task("single_label", 4)) == ("label", t)
    assert t.decode(3) == 3 and t.decode(3).dtype == np.int64
    assert t.dense(pa.array([3, 0, 1]), IDS)[:, 0].tolist() == [3, 0, 1]
    with pytest.raises(ValueError, match="clip b has label 4, but num_outputs is 4"):
        t.dense(pa.array([0, 4, 1]), IDS)
    assert t.outputs_from_manifest(manifest(7), None) == 7
    with pytest.raises(ValueError, match="m.parquet names no classes"):
        t.outputs_from_manifest(manifest(0), None)
    logits, y = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]), torch.tensor([0, 3])
    torch.testing.assert_close(t.loss(logits, y), F.cross_entropy(logits, y))
    acc = t.accumulator()
    acc.update(logits, y, loss=2.0)
    other = t.accumulator()
    other.update(logits[:1], y[:1], loss=0.5)
    acc.merge(other)  # 3 clips: 2 hit at top-1 (the first twice), all at top-5 (4 classes)
    assert acc.compute() == pytest.approx({"loss": 1.5, "top1": 2 / 3, "top5": 1.0})
    views = torch.tensor([[4.0, 0, 0, 0], [0.0, 1, 0, 0]])  # one video, two views
    avg = t.average_views(views, 2)
    torch.testing.assert_close(avg.exp(), views.softmax(-1).mean(0, keepdim=True))


def test_multi_label():
    t = MultiLabel(4)
    assert t.column == "multi_label"
    assert t.decode([0, 2]).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert t.dense(pa.array([[1], [], [0, 3]]), IDS).tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]
    with pytest.raises(ValueError, match="clip c has class 9"):
        t.dense(pa.array([[1], [], [9]]), IDS)
    logits, y = torch.tensor([[3.0, -3.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(t.loss(logits, y), F.binary_cross_entropy_with_logits(logits, y))
    acc = t.accumulator()
    acc.update(logits, y)
    assert acc.compute()["mAP"] == 1.0  # both positives outrank every negative
    views = torch.tensor([[2.0, -1.0, 0, 0], [-2.0, 3.0, 0, 0]])
    torch.testing.assert_close(t.average_views(views, 2).sigmoid(), views.sigmoid().mean(0, keepdim=True))


def test_regression():
    t = Regression(2)
    assert t.column == "regression"
    assert t.decode([0.5, 1.0]).dtype == np.float32
    col = pa.array([[0.5, 1.0], [2.0, 3.0], [0.0, 0.0]], pa.list_(pa.float32()))
    assert t.dense(col, IDS).tolist() == [[0.5, 1.0], [2.0, 3.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="clip b has 1 regression targets, expected 2"):
        t.dense(pa.array([[0.5, 1.0], [2.0], [0.0, 0.0]]), IDS)
    assert t.outputs_from_manifest(manifest(), pa.table({"regression": col})) == 2
    assert t.output_names(SimpleNamespace(regression_names=["x", "y"])) == ["x", "y"]
    assert SingleLabel(3).output_names(manifest()) is None  # classes are not per-output metrics
    pred, y = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    torch.testing.assert_close(t.loss(pred, y), F.mse_loss(pred, y))
    acc = t.accumulator()
    acc.update(pred, y)
    assert acc.compute(["x", "y"]) == pytest.approx({"loss": 0.0, "mse_x": 0.5, "mse_y": 2.0, "mse": 1.25})
    torch.testing.assert_close(t.average_views(pred, 2), torch.tensor([[0.5, 0.0]]))


def test_heads_route_each_clip_to_its_own_task():
    t = Heads(heads=[("cls", SingleLabel(3)), ("reg", Regression(2))])
    assert t.num_outputs == 3 and t.column == "packed_target"
    packed = np.concatenate([t.pack(0, pa.array([2]), ["x"]), t.pack(1, pa.array([[0.5, -1.0]]), ["y"])])
    assert packed.tolist() == [[2.0, 0.0, 0.0], [0.5, -1.0, 0.0]]
    logits, index = torch.tensor([[0.0, 0.0, 1.0], [0.5, 1.0, 0.0]]), torch.tensor([0, 1])
    target = torch.from_numpy(packed)
    expected = (F.cross_entropy(logits[:1], torch.tensor([2]), reduction="sum")
                + F.mse_loss(logits[1:, :2], target[1:, :2], reduction="sum") / 2) / 2
    torch.testing.assert_close(t.loss(logits, target, index), expected)
    acc = t.accumulator()
    acc.add_batch(logits, {"target": target, "dataset_index": index}, loss=1.0)
    m = acc.compute()
    assert m["cls_top1"] == 1.0 and m["reg_mse"] == pytest.approx((0 + 2.0 ** 2) / 2) and m["loss"] == 1.0
    with pytest.raises(ValueError, match="dataset_index out of range"):
        t.loss(logits, target, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="multi-view evaluation is not supported"):
        t.average_views(logits, 2)


def test_a_new_task_kind_is_one_registration():
    """A task kind declares its primary metric, direction and classes; the config checks and the
    checkpoint metric read the live registry, so one register_task line is all a new kind needs."""
    from components.model_config import HeadConfig
    from pipelines.config import DatasetEntry, ExperimentConfig
    from pipelines.run.best import checkpoint_metric

    class Ordinal(Regression):
        kind = "ordinal_test"
        headline = "mae"
        headline_mode = "min"

    with pytest.raises(ValueError, match="task must be one of"):
        HeadConfig(task="ordinal_test")
    try:
        register_task(Ordinal)
        assert isinstance(make_task("ordinal_test", 1), Ordinal)
        assert "ordinal_test" in TASKS
        HeadConfig(task="ordinal_test")  # accepted without touching the config module
        DatasetEntry(name="d", manifest="m.parquet", task="ordinal_test")
        cfg = ExperimentConfig()
        cfg.model.head.task = "ordinal_test"
        assert checkpoint_metric(cfg) == ("val_mae", "min")
    finally:
        TASK_KINDS.pop("ordinal_test")
        TASKS.remove("ordinal_test")
    assert tuple(TASKS) == ("single_label", "multi_label", "regression")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        make_task("nope")
    assert issubclass(SingleLabel, Task)


@pytest.mark.parametrize("kind", sorted(TASK_KINDS))
def test_every_task_kind_declares_what_the_pipelines_read(kind):
    """Primary metric (a key its accumulator reports), its direction, classes or not."""
    cls = TASK_KINDS[kind]
    assert cls.headline and cls.headline_mode in ("max", "min") and isinstance(cls.has_classes, bool)
    assert cls.column or kind == "multi_dataset"
    if kind != "multi_dataset":  # a composite reports its heads' metrics; its headline is the loss
        task = cls(3)
        acc = task.accumulator()
        target = torch.from_numpy(np.stack([task.decode(v) for v in
                                            {"single_label": [0, 2], "multi_label": [[0], [1, 2]],
                                             "regression": [[0.1, 0.2, 0.3]] * 2}[kind]]))
        acc.update(torch.randn(2, 3), target, loss=1.0)
        assert cls.headline in acc.compute()
