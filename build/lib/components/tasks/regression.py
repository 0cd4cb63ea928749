"""regression: a vector of values per clip (manifest column ``regression``); MSE per target and
their mean (UDIVA reports the mean MSE of the five OCEAN traits). Views average the values."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import torch.nn.functional as F

from components.tasks.base import Task

# UDIVA v0.5's regression targets (Big Five personality traits, OCEAN order); pass as ``names`` to
# ``MetricAccumulator.compute`` (or a manifest's ``regression_names``) to get mse_openness, ...
OCEAN_TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")


class Regression(Task):
    kind = "regression"
    column = "regression"
    headline = "mse"
    headline_mode = "min"
    has_classes = False

    def outputs_from_manifest(self, manifest, train_table) -> int:
        return len(train_table[self.column][0].as_py())

    def output_names(self, manifest) -> list[str]:
        return list(manifest.regression_names or [])

    def decode(self, value) -> np.ndarray:
        return np.asarray(value, dtype=np.float32)

    def dense(self, column, clip_ids) -> np.ndarray:
        column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lengths != self.num_outputs)
        if bad.size:
            raise ValueError(f"clip {clip_ids[int(bad[0])]} has {lengths[bad[0]]} regression targets, "
                             f"expected {self.num_outputs}")
        values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        return values.reshape(len(column), self.num_outputs).astype(np.float32)

    def per_sample_loss(self, logits, target):
        return F.mse_loss(logits, target.float(), reduction="none").mean(dim=1)

    def accumulate(self, acc, logits, target) -> None:
        sq = (logits - target.float()).pow(2).sum(dim=0).cpu().numpy()
        for i, v in enumerate(sq):
            acc.add(f"mse_{i}", float(v))

    def metrics(self, acc, names) -> dict[str, float]:
        per = [acc.sums.get(f"mse_{i}", 0.0) / acc.count for i in range(self.num_outputs)]
        out = {f"mse_{names[i] if names and i < len(names) else i}": v for i, v in enumerate(per)}
        out["mse"] = float(np.mean(per))
        return out
