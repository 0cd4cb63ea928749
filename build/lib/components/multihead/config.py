"""One head of a multi-dataset model (``model.heads``), and kind ``multi_dataset``'s model config.

The training driver fills ``model.heads`` from ``data.datasets`` (name, task, width per dataset, in
that order), so the model config saved with the weights is enough to rebuild every head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.config import cfg
from components.model_config import ModelConfig
from components.tasks import TASKS, Heads, Task

# Head names become module names (no dots) and parts of metric names (val_<name>_top1).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class DatasetHeadConfig:
    name: str = cfg("", "dataset name: its head's key in the weights file and the prefix of its metrics")
    task: str = cfg("single_label", "single_label (CE), multi_label (BCE, mAP) or regression (MSE)")
    num_outputs: int = cfg(0, "classes / targets of this head")

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"name must be letters, digits, _ or -, got {self.name!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {tuple(TASKS)}, got {self.task!r}")
        if self.num_outputs <= 0:
            raise ValueError(f"num_outputs must be positive, got {self.num_outputs}")


@dataclass
class MultiDatasetModelConfig(ModelConfig):
    kind: str = cfg("multi_dataset", "model kind (this config: multi_dataset)")
    heads: list[DatasetHeadConfig] = cfg([], "one head per dataset, in data.datasets order (filled from "
                                             "data.datasets by `vidpeft train`)")

    def task(self) -> Task:
        return Heads.from_configs(self.heads)


def dataset_heads(config: ModelConfig) -> list[DatasetHeadConfig]:
    """The per-dataset heads of a multi-dataset model config; none for any other kind."""
    return list(config.heads) if isinstance(config, MultiDatasetModelConfig) else []
