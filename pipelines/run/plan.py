"""The run plan: everything the `vidpeft train` driver hands each Ray Train worker, typed.

The driver builds one ``RunPlan`` after it has read the manifests and prepared the config (the same
for a plain run and for a Tune trial, whose driver is ``run_train`` too); Ray ships it to the workers
as plain data (``to_dict``), and each worker reads it back with ``RunPlan.from_dict``, which refuses
unknown keys and wrong types, so a field added on one side and not the other fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.config import cfg, from_dict, to_dict
from pipelines.config import ExperimentConfig
from pipelines.runtime.phase_log import mark


@dataclass
class RunPlan:
    config: ExperimentConfig = cfg(factory=ExperimentConfig, help="the resolved, prepared run config")
    num_outputs: int = cfg(0, "the model's output width (classes, targets, or the widest head)")
    class_names: list[str] | None = cfg(None, "the manifest's class names (M2-CLIP's prompts), if it has them")
    target_names: list[str] | None = cfg(None, "regression target names of a single manifest (mse_<name>)")
    dataset_target_names: dict[str, list[str]] | None = cfg(None, "several datasets: regression names per dataset")
    dataset_names: list[str] = cfg([], "datasets by index: skipped clips are counted per dataset (and routed "
                                        "to their head with several datasets)")
    has_val: bool = cfg(False, "a validation split is streamed as dataset shard 'val'")
    train_clips: int = cfg(0, "training clips per epoch (plans the per-step LR schedule and the progress total)")
    val_clips: int = cfg(0, "validation clips per epoch")
    progress_board: str = cfg("", "the driver's live progress board (pipelines/run/progress_relay.py): rank 0 "
                                  "posts its progress there; '' = rank 0 prints lines")
    val_stream: bool = cfg(False, "shard 'val' is one stream over every epoch still to run (one worker), "
                                  "not a dataset per epoch")
    tracking_uri: str | None = cfg(None, "MLflow tracking URI the workers log into (None: no tracking)")
    run_id: str | None = cfg(None, "the driver's MLflow run id")
    resume_from: str | None = cfg(None, "checkpoint to resume from unless Ray hands the workers a newer one "
                                        "(Train V2 refuses resume_from_checkpoint)")
    storage: str | None = cfg(None, "this run's checkpoint storage, where a checkpoint Ray's controller never "
                                    "heard of may be found")
    checkpoint_metric: str | None = cfg(None, "the validation metric that ranks checkpoints and that early "
                                              "stopping (optim.patience) watches")
    checkpoint_mode: str = cfg("max", "max or min: which way checkpoint_metric improves")
    mid_epoch: bool = cfg(True, "checkpoint.every_steps/every_minutes apply (off in a Tune trial, whose every "
                                "report is an iteration of its scheduler)")
    fault: str = cfg("", "tests only: where rank 0 kills itself once (pipelines/run/fault_hook.py); '' = never")

    @property
    def metric_names(self) -> Any:
        """Names for per-output metrics: per dataset with several datasets, else the regression names."""
        return self.dataset_target_names or self.target_names

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunPlan":
        mark("worker_loop")
        return from_dict(cls, data, prefix="run_plan")
