"""Training health in a run: the detector (components/engine/health.py) fed once per epoch, its
findings said in one line each, the MLflow tag `vidpeft.health` kept current, and
`optim.stop_on_collapse` turned into a stop reason.

Every worker runs the same checks on the same gathered metrics (and all-reduced gradients), so all
stop at the same epoch; only rank 0 prints and tags.
"""

from __future__ import annotations

from components.engine import GradProbe, HealthWatch, prediction_share, unwrap

TAG = "vidpeft.health"  # ok | stalled | collapsed | nonfinite (the worst seen so far)
_RANK = {"ok": 0, "stalled": 1, "collapsed": 2, "nonfinite": 3}
STOPS = ("collapsed", "nonfinite")  # what optim.stop_on_collapse ends


class RunHealth:
    def __init__(self, cfg, model, step, task_kind: str, num_outputs: int, *,
                 uri: str | None = None, run_id: str | None = None) -> None:
        """``uri``/``run_id``: the MLflow run to tag (rank 0; None elsewhere)."""
        classes = num_outputs if task_kind == "single_label" else 0
        self.watch = HealthWatch(num_classes=classes, patience=cfg.optim.collapse_patience)
        self.probe = GradProbe(unwrap(model))
        step.on_grads = self.probe.observe
        self.stop_on_collapse = cfg.optim.stop_on_collapse
        self.uri, self.run_id = uri, run_id
        self.status: str | None = None
        self.lines: list[str] = []  # what the last check found, one line each, for the caller to say
        self.summary = ""  # the worst finding's line

    def check(self, metrics: dict, train_acc, val_acc=None) -> str | None:
        """Feed one epoch (its metrics and gathered accumulators); adds ``*_pred_share`` to ``metrics``,
        keeps what it found in ``lines``, tags the run; returns a stop reason when the run should end, else None."""
        share = None
        for prefix, acc in (("train", train_acc), ("val", val_acc)):
            s = prediction_share(acc) if acc is not None else None
            if s is not None:
                metrics[f"{prefix}_pred_share"] = share = s  # validation's wins when there is one
        found = self.watch.update(metrics, share, self.probe.dead())
        status = max([self.status or "ok", *(v.status for v in found)], key=_RANK.__getitem__)
        self.lines = [f"[vidpeft] health: {v.line}" for v in found]
        worst = [v for v in found if _RANK[v.status] >= _RANK[self.status or "ok"]]
        if worst:
            self.summary = max(worst, key=lambda v: _RANK[v.status]).line
        if self.summary:
            metrics["health"] = self.summary  # the run's worst finding so far: metrics.json, the closing table
        if status != self.status and self.uri and self.run_id:
            from pipelines.runtime.tracking import client

            client(self.uri).set_tag(self.run_id, TAG, status)
        self.status = status
        stops = [v for v in found if v.status in STOPS]
        if self.stop_on_collapse and stops:
            return f"optim.stop_on_collapse: {stops[0].status} ({stops[0].detail})"
        return None
