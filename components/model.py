"""The adapted video model: frozen backbone + injected adapters + a task head.

Input is the decoder's uint8 clip (B, T, H, W, C); normalisation with the backbone's mean/std
happens here, on the model's device, so the data pipeline ships 4x fewer bytes than float frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from components.adapters import AdapterConfig, ForwardContext
from components.adapters.inject import adapter_modules, inject_adapters
from components.backbones import BackboneConfig, build_backbone
from components.param_counts import parameter_counts  # noqa: F401  (re-exported)
from components.config import ConfigError, cfg
from components.m2clip.config import M2ClipConfig
from components.multihead.config import DatasetHeadConfig
from components.tasks import TASKS, make_task

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
    dim: int = cfg(0, "feature width; 0 = take it from the manifest metadata")

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a modality needs a name")
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


class VideoModel(nn.Module):
    def __init__(self, config: ModelConfig, num_outputs: int) -> None:
        super().__init__()
        if config.finetune == "linear" and config.adapters:
            raise ConfigError("model.finetune=linear trains the head only: remove model.adapters")
        self.config = config
        self.task = make_task(config.head.task, num_outputs)
        self.context = ForwardContext()
        self.backbone = build_backbone(config.backbone)
        spec = self.backbone.spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 1, 3, 1, 1), persistent=False)
        for p in self.backbone.parameters():
            p.requires_grad_(config.finetune == "full")
        self.context.modality_dims = {m.name: m.dim for m in config.modalities}
        inject_adapters(self.backbone, spec, config.adapters, self.context)
        prepare_adapters(self, config.adapters)
        self.head = nn.Sequential(nn.Dropout(config.head.dropout), nn.Linear(spec.feature_dim, num_outputs))

    @property
    def spec(self):
        return self.backbone.spec

    def normalise(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, C) -> float (B, T, C, H, W) normalised; float input passes through."""
        if video.dtype == torch.uint8:
            video = rearrange(video, "b t h w c -> b t c h w").float().div_(255.0)
            video = (video - self.mean) / self.std
        return video

    def features(self, video: torch.Tensor, side: dict | None = None, side_mask: dict | None = None) -> torch.Tensor:
        x = self.normalise(video)
        self.context.set(num_frames=x.shape[1], side=side, side_mask=side_mask)
        return self.backbone(x)

    def predict(self, video: torch.Tensor, side: dict | None = None, side_mask: dict | None = None) -> torch.Tensor:
        return self.head(self.features(video, side, side_mask))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The training protocol every model kind follows (one call, so DDP sees one forward).

        ``batch``: ``video`` (B, T, H, W, C) uint8, optional ``target``, and per modality
        ``side_<name>`` (B, D) with ``side_<name>_mask`` (B,) true where present.
        Returns ``logits`` (what metrics score) and, when a target is given, ``loss``.
        """
        side, mask = side_inputs(batch, self.config.modalities)
        logits = self.predict(batch["video"], side, mask)
        out = {"logits": logits}
        if "target" in batch:
            out["loss"] = self.task.loss(logits, batch["target"])
        return out


def prepare_adapters(model: nn.Module, adapters: list[AdapterConfig]) -> None:
    """After injection: bind adapters that share weights, load ``init_from``, freeze ``trainable: false``.

    Any model kind that injects adapters calls this, so sharing errors surface at build time and
    staged training (e.g. train MHVA+PT, then only CAA initialised from that run) works everywhere.
    """
    from components.checkpoint import init_adapter_from

    for _, layer in adapter_modules(model):
        if hasattr(layer, "bind"):
            layer.bind()
    for n, a in enumerate(adapters):
        if a.init_from:
            try:
                init_adapter_from(model, a.key, a.init_from)
            except (FileNotFoundError, ValueError) as e:
                raise ConfigError(f"model.adapters.{n}.init_from: {e}") from None
        for _, layer in adapter_modules(model, a.key):
            layer.requires_grad_(a.trainable)


def side_inputs(batch: dict, modalities: list[ModalityConfig]) -> tuple[dict, dict]:
    side = {m.name: batch[f"side_{m.name}"] for m in modalities if f"side_{m.name}" in batch}
    mask = {m.name: batch[f"side_{m.name}_mask"] for m in modalities if f"side_{m.name}_mask" in batch}
    return side, mask


# Model kinds: name -> class with __init__(config, num_outputs, class_names) and the forward protocol above.
MODEL_KINDS: dict[str, type[nn.Module]] = {}


def register_model_kind(name: str, cls: type[nn.Module]) -> None:
    MODEL_KINDS[name] = cls


def build_model(config: ModelConfig, num_outputs: int, class_names: list[str] | None = None) -> nn.Module:
    if num_outputs <= 0:
        raise ConfigError("model.head.num_outputs: must be positive (or 0 with a manifest that names its classes)")
    if config.kind == "classifier":
        return VideoModel(config, num_outputs)
    if config.kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind: unknown {config.kind!r}; known: {['classifier', *sorted(MODEL_KINDS)]}")
    return MODEL_KINDS[config.kind](config, num_outputs, class_names)


import components.m2clip.model  # noqa: E402,F401  (registers model kind "m2clip"; imports this module)
import components.multihead.model  # noqa: E402,F401  (registers model kind "multi_dataset")
