"""The protocol every model kind follows, and the helpers kinds share.

A model kind is an ``nn.Module`` subclass of ``ModelKind``, built as ``cls(config, num_outputs,
class_names)`` and registered by name (one line in ``components/model.py``). It declares:

- ``task``: the Task it trains (its loss, target decoding and metrics; ``components/tasks``);
- ``spec``: its frozen image tower's BackboneSpec (adapter sites, ``total_params`` for trainable %);
- ``batch_keys`` / ``outputs``: what ``forward(batch)`` reads and what it returns (``logits`` always,
  ``loss`` when the batch has a ``target``, optional ``loss/<term>`` parts);
- ``head_modules``: its task heads (left out of the papers' "trainable %");
- ``param_groups(lr)``: its optimiser groups (default: every trainable parameter at ``lr``);
- ``config_cls``: its config, ``ModelConfig`` or a subclass adding the kind's own keys (registered
  with the kind, so ``model.kind`` picks it when a config is read);
- ``zero_shot``: it scores class names it never trained on (``zero_shot_logits``; a text tower), so
  ``zeroshot``, ``predict --classes`` and ``zeroshot.manifest`` accept it;
- ``multi_dataset``: it trains several manifests at once, a head each (``data.datasets``);
- ``with_datasets``: the kind a config of this kind becomes when ``data.datasets`` lists several
  manifests ("" = this kind has one head and cannot).
``normalise`` turns the decoder's uint8 clips into the backbone's normalised float input, on the
model's device, so the data pipeline ships 4x fewer bytes than float frames.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from einops import rearrange
from torch import nn

from components.adapters import AdapterConfig
from components.adapters.inject import adapter_modules
from components.adapters.parts import select_parts
from components.config import ConfigError
from components.model_config import ModalityConfig, ModelConfig, register_model_config


class ModelKind(nn.Module):
    batch_keys: ClassVar[tuple[str, ...]] = ("video", "target")
    outputs: ClassVar[tuple[str, ...]] = ("logits", "loss")
    head_modules: ClassVar[tuple[str, ...]] = ("head",)
    config_cls: ClassVar[type[ModelConfig]] = ModelConfig
    zero_shot: ClassVar[bool] = False
    multi_dataset: ClassVar[bool] = False
    with_datasets: ClassVar[str] = ""

    def init_normalisation(self, spec) -> None:
        """Register the backbone's per-channel mean / std (buffers: they follow the model's device)."""
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 1, 3, 1, 1), persistent=False)

    def normalise(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, C) -> float (B, T, C, H, W) normalised; float input passes through."""
        if video.dtype == torch.uint8:
            video = rearrange(video, "b t h w c -> b t c h w").float().div_(255.0)
            video = (video - self.mean) / self.std
        return video

    def param_groups(self, base_lr: float) -> list[dict]:
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params}] if params else []


# name -> ModelKind subclass; filled by the registration lines in components/model.py
MODEL_KINDS: dict[str, type[ModelKind]] = {}


def model_kind(name: str) -> type[ModelKind]:
    """The registered kind called ``name``; a ConfigError naming model.kind otherwise."""
    if name not in MODEL_KINDS:
        raise ConfigError(f"model.kind: unknown {name!r}; known: {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[name]


def zero_shot_kinds() -> list[str]:
    """The registered kinds that declare ``zero_shot`` (for error messages that say what would work)."""
    return sorted(n for n, k in MODEL_KINDS.items() if k.zero_shot)


def register_model_kind(name: str, cls: type[ModelKind]) -> None:
    if not issubclass(cls, ModelKind):
        raise TypeError(f"model kind {name!r}: {cls.__name__} must subclass components.model_kind.ModelKind")
    register_model_config(name, cls.config_cls)
    MODEL_KINDS[name] = cls


def prepare_adapters(model: nn.Module, adapters: list[AdapterConfig]) -> None:
    """After injection: bind adapters that share weights, load ``init_from``, freeze ``trainable: false``
    and the parts outside ``train_only`` or inside ``freeze``.

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
        layers = [layer for _, layer in adapter_modules(model, a.key)]
        for layer in layers:
            layer.requires_grad_(a.trainable)
        if (a.train_only or a.freeze) and not a.trainable:
            raise ConfigError(f"model.adapters.{n}: train_only/freeze select parts of a trainable adapter "
                              "(this one has trainable: false)")
        select_parts(layers, a.train_only, a.freeze, f"model.adapters.{n}")


def side_inputs(batch: dict, modalities: list[ModalityConfig]) -> tuple[dict, dict]:
    side = {m.name: batch[f"side_{m.name}"] for m in modalities if f"side_{m.name}" in batch}
    mask = {m.name: batch[f"side_{m.name}_mask"] for m in modalities if f"side_{m.name}_mask" in batch}
    return side, mask
