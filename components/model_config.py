"""A model's configuration: its kind, frozen backbone, adapters, head, side modalities, what trains.

``kind`` selects the model kind (``components/model.py`` lists them); the sections a kind does not
use keep their defaults (``m2clip`` for kind m2clip, ``heads`` for kind multi_dataset).
"""

from __future__ import annotations

from dataclasses import dataclass

from components.adapters import AdapterConfig
from components.backbones import BackboneConfig
from components.config import cfg
from components.m2clip.config import M2ClipConfig
from components.multihead.config import DatasetHeadConfig
from components.tasks import TASKS

FINETUNE_MODES = ("adapters", "full", "linear")


@dataclass
class HeadConfig:
    task: str = cfg("single_label", "single_label (CE), multi_label (BCE, mAP) or regression (MSE)")
    num_outputs: int = cfg(0, "classes / targets; 0 = take it from the manifest")
    dropout: float = cfg(0.0, "dropout before the linear head")

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")


@dataclass
class ModalityConfig:
    name: str = cfg("", "modality name (audio, flow, text, ...); adapters refer to it by this name")
    column: str = cfg("", "manifest column holding the per-clip feature vector (list<float32>); default feat_<name>")
    dim: int = cfg(0, "feature width (of one token); 0 = take it from the manifest metadata")
    tokens: int = cfg(0, "tokens per clip: 1 = one vector, M > 1 = a sequence (audio frames, flow per time "
                         "bin, transcript tokens) fed to the adapters as (B, M, dim); 0 = from the manifest")

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a modality needs a name")
        if self.tokens < 0:
            raise ValueError(f"modality {self.name!r}: tokens must be >= 0, got {self.tokens}")
        self.column = self.column or f"feat_{self.name}"


@dataclass
class ModelConfig:
    kind: str = cfg("classifier", "model kind: classifier (backbone+adapters+head) or another registered kind")
    backbone: BackboneConfig = cfg(factory=BackboneConfig, help="frozen backbone")
    adapters: list[AdapterConfig] = cfg([], "adapters to inject (each item's `type` selects its config)")
    head: HeadConfig = cfg(factory=HeadConfig, help="task head")
    modalities: list[ModalityConfig] = cfg([], "side modalities read from the manifest and passed to adapters")
    finetune: str = cfg("adapters", "what trains: adapters (+head), full (whole backbone too), linear (head only)")
    m2clip: M2ClipConfig = cfg(factory=M2ClipConfig, help="M2-CLIP text adapters, prompts and decoder heads (kind m2clip)")
    heads: list[DatasetHeadConfig] = cfg([], "kind multi_dataset: one head per dataset, in data.datasets order "
                                             "(filled from data.datasets by `vidpeft train`)")

    def __post_init__(self) -> None:
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {self.finetune!r}")
