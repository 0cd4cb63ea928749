"""A search trial's folder keeps what its finished epochs earned, even when the scheduler stops it.

ASHA stops a trial by ending its driver in the middle of ``trainer.fit()``: the run's closing step (best
weights, metrics.json) never runs. This Train callback writes both after every epoch's report, from the
persisted checkpoint, the way the closing step would at that point (the best epoch so far by
checkpoint.metric); a trial that finishes rewrites them at its end as any run does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ray.train import UserCallback

from pipelines.run import best
from pipelines.run.checkpoints import WEIGHTS
from pipelines.runtime.redaction import redact_data

PARTIAL_KEY = "partial"  # metrics.json of a run that has not (yet) finished


class KeepEpochResults(UserCallback):
    def __init__(self, out_dir: str | Path, metric: str | None, mode: str, epochs: int) -> None:
        self.out, self.metric, self.mode, self.epochs = Path(out_dir), metric, mode, epochs
        self.best: dict | None = None

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if not metrics or checkpoint is None:
            return
        m = metrics[0]
        score = m.get(self.metric) if self.metric else None
        if self.best is None or self.metric is None or best.better(score, self.best.get(self.metric), self.mode):
            self.best = dict(m)
            with checkpoint.as_directory() as d:
                _write_atomic(self.out / WEIGHTS, (Path(d) / WEIGHTS).read_bytes())
        final = best.summarise(self.best, m, self.metric, self.mode)
        info = self.out / "run_info.json"
        run_id = json.loads(info.read_text()).get("run_id") if info.is_file() else None
        final.update(run_id=run_id, output_dir=str(self.out),
                     **{PARTIAL_KEY: f"written after epoch {m.get('epoch', 0) + 1} of {self.epochs}; the run's own "
                                     f"end rewrites it (absent when the search stopped the trial there)"})
        _write_atomic(self.out / "metrics.json", json.dumps(redact_data(final), indent=2, default=str).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
