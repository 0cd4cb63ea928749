"""A model's configuration: its kind, frozen backbone, adapters, head, side modalities, what trains.

``ModelConfig`` holds what every model kind shares (and is the classifier's whole config). A kind
with settings of its own declares a subclass adding them (``M2ClipModelConfig``: ``m2clip``;
``MultiDatasetModelConfig``: ``heads``) as its ``ModelKind.config_cls``; registering the kind
registers that class, and ``kind`` picks it when a config is built from YAML, ``--set`` or a saved
run (``components.config`` polymorphism). A key of another kind raises, naming the key and the kind.
Run configs saved when every kind's sections were written out are read back through
``drop_other_kinds``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from components.adapters import AdapterConfig
from components.backbones import BackboneConfig
from components.config import ConfigError, cfg, register_polymorphic, to_dict
from components.tasks import TASKS, Task, make_task

FINETUNE_MODES = ("adapters", "full", "linear")


@dataclass
class HeadConfig:
    task: str = cfg("single_label", "single_label (CE), multi_label (BCE, mAP) or regression (MSE)")
    num_outputs: int = cfg(0, "classes / targets; 0 = take it from the manifest")
    dropout: float = cfg(0.0, "dropout before the linear head")

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {tuple(TASKS)}, got {self.task!r}")


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
    """The settings every model kind has (a kind's own are in its subclass, e.g. ``model.m2clip``)."""

    kind: str = cfg("classifier", "model kind: classifier (backbone+adapters+head), m2clip, multi_dataset or "
                                  "another registered kind; selects which kind's own keys the config takes")
    backbone: BackboneConfig = cfg(factory=BackboneConfig, help="frozen backbone")
    adapters: list[AdapterConfig] = cfg([], "adapters to inject (each item's `type` selects its config)")
    head: HeadConfig = cfg(factory=HeadConfig, help="task head")
    modalities: list[ModalityConfig] = cfg([], "side modalities read from the manifest and passed to adapters")
    grad_checkpointing: bool = cfg(False, "recompute each backbone block's activations in the backward instead "
                                          "of keeping them (frozen blocks too): less memory, ~30% more compute")
    finetune: str = cfg("adapters", "what trains: adapters (+head), full (whole backbone too), linear (head only)")

    def __post_init__(self) -> None:
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {self.finetune!r}")
        own = MODEL_CONFIGS.get(self.kind)
        if own is not None and own is not type(self):
            raise ValueError(f"kind {self.kind!r} is configured by {own.__name__}, not {type(self).__name__}")

    def task(self) -> Task:
        """The Task this model trains (a kind with several heads returns its packing of them)."""
        return make_task(self.head.task, self.head.num_outputs)


# kind -> its config class; filled by ``register_model_kind`` (components/model_kind.py)
MODEL_CONFIGS: dict[str, type[ModelConfig]] = {}


def register_model_config(kind: str, cls: type[ModelConfig]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, ModelConfig)):
        raise TypeError(f"model kind {kind!r}: its config {cls!r} must subclass ModelConfig")
    MODEL_CONFIGS[kind] = cls


def model_config_class(kind: str) -> type[ModelConfig]:
    if kind not in MODEL_CONFIGS:
        raise KeyError(f"unknown {kind!r}; known: {sorted(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[kind]


register_polymorphic(ModelConfig, model_config_class, key="kind", default="classifier",
                     variants=lambda: dict(MODEL_CONFIGS))


def with_kind(config: ModelConfig, kind: str, **changes: Any) -> ModelConfig:
    """``config`` as a config of ``kind`` (the shared settings kept), with ``changes`` applied."""
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(ModelConfig)}
    return model_config_class(kind)(**{**shared, "kind": kind, **changes})


def _is_default(saved: Any, default: Any) -> bool:
    if isinstance(saved, dict) and isinstance(default, dict):  # keys newer than the file are absent: fine
        return all(k in default and _is_default(v, default[k]) for k, v in saved.items())
    return saved == default or (saved is None and default == [])


def drop_other_kinds(model: dict, where: str) -> dict:
    """A saved model config (plain data) with only its own kind's keys.

    Runs saved before configs were per kind wrote every kind's sections (a classifier's ``m2clip``
    defaults, an M2-CLIP run's empty ``heads``): those are dropped when they hold their defaults. One
    that does not cannot be told apart from a mistake, so it raises naming ``where`` and the key.
    """
    kind = model.get("kind", "classifier")
    own = MODEL_CONFIGS.get(kind)
    if own is None:  # an unknown kind: building the config reports it
        return model
    mine = {f.name for f in dataclasses.fields(own)}
    out = dict(model)
    for other_kind, other in MODEL_CONFIGS.items():
        for f in dataclasses.fields(other):
            if f.name in mine or f.name not in out:
                continue
            default = to_dict(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            if not _is_default(out[f.name], default):
                raise ConfigError(f"{where}: model.{f.name} is only for kind {other_kind}, and this saved config's "
                                  f"kind is {kind} with a model.{f.name} that is not the default")
            del out[f.name]
    return out
