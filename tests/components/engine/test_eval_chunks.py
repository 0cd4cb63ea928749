"""Multi-view evaluation in chunks (data.eval_max_views): the same scores and metrics as one call per
batch, and the model never sees more views at once than the bound."""

from __future__ import annotations

import math

import pytest
import torch

from components.engine import evaluate
from components.engine.views import chunked_forward
from components.tasks import make_task
from tests.pipelines.infer.test_eval_views import tiny_classifier


def multi_view_batches(videos: int, views: int, batch: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, videos, batch):
        b = min(batch, videos - start)
        out.append({"video": torch.randint(0, 256, (b, views, 4, 32, 32, 3), generator=g, dtype=torch.uint8),
                    "target": torch.randint(0, 3, (b,), generator=g),
                    "side_audio": torch.randn(b, 4, generator=g), "side_audio_mask": torch.rand(b, generator=g) > 0.5,
                    "ok": torch.tensor([True] * (b - 1) + [start > 0])})  # the first batch has an unreadable clip
    return out


class Spy:
    """Calls the model and records how many clips (views) each call gave it."""

    def __init__(self, model) -> None:
        self.model, self.sizes = model, []

    def __call__(self, batch: dict) -> dict:
        self.sizes.append(len(batch["video"]))
        return self.model(batch)


@pytest.mark.parametrize("max_views", [1, 5, 12])
def test_chunked_views_score_like_one_call_and_respect_the_bound(max_views):
    model = tiny_classifier(modalities=("audio",))
    task = make_task("single_label", 3)
    batches = multi_view_batches(videos=7, views=4, batch=4)  # batches of 4 and 3 videos x 4 views (3 x 4 live)
    whole, chunked = Spy(model), Spy(model)
    ref = evaluate(model, batches, task, forward=whole)
    got = evaluate(model, batches, task, forward=chunked, max_views=max_views)
    assert whole.sizes == [12, 12]  # 3 live videos x 4 views in each batch
    assert max(chunked.sizes) <= max_views and sum(chunked.sizes) == 24
    assert len(chunked.sizes) == 2 * math.ceil(12 / max_views)
    torch.testing.assert_close(got.scores, ref.scores, rtol=0, atol=1e-6)
    assert got.scores.argmax(1).tolist() == ref.scores.argmax(1).tolist()
    assert got.metrics["top1"] == ref.metrics["top1"] and got.metrics["top5"] == ref.metrics["top5"]
    assert got.metrics["loss"] == pytest.approx(ref.metrics["loss"], abs=1e-6)  # the loss: a row-weighted mean


def test_chunks_concatenate_rows_and_weight_scalars():
    flat = {"video": torch.arange(5.0)[:, None], "target": torch.arange(5), "names": list("abcde"), "k": 3}
    seen = []

    def call(b):
        seen.append((b["target"].tolist(), b["names"], b["k"]))
        return {"logits": b["video"] * 2, "loss": b["video"].mean()}

    out = chunked_forward(call, flat, 2)
    assert seen == [([0, 1], ["a", "b"], 3), ([2, 3], ["c", "d"], 3), ([4], ["e"], 3)]
    assert out["logits"].flatten().tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert out["loss"].item() == pytest.approx(2.0)  # the mean of all rows, not of the chunk means (0.5, 2.5, 4)
    assert chunked_forward(call, flat, 0)["loss"].item() == pytest.approx(2.0)  # 0: one call
    with pytest.raises(ValueError, match="cannot combine the model's output 'table'"):
        chunked_forward(lambda b: {"table": torch.zeros(7, 2)}, flat, 2)
