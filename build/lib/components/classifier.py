"""Model kind ``classifier``: frozen backbone + injected adapters + one task head."""

from __future__ import annotations

import torch
from torch import nn

from components.adapters import ForwardContext
from components.adapters.inject import inject_adapters
from components.backbones import build_backbone
from components.config import ConfigError
from components.model_config import ModelConfig
from components.model_kind import ModelKind, prepare_adapters, side_inputs
from components.tasks import make_task


class VideoModel(ModelKind):
    with_datasets = "multi_dataset"  # data.datasets: the same backbone and adapters, a head per dataset

    batch_keys = ("video", "target", "side_<modality>", "side_<modality>_mask")

    def __init__(self, config: ModelConfig, num_outputs: int, class_names: list[str] | None = None) -> None:
        super().__init__()
        if config.finetune == "linear" and config.adapters:
            raise ConfigError("model.finetune=linear trains the head only: remove model.adapters")
        self.config = config
        self.task = make_task(config.head.task, num_outputs)
        self.context = ForwardContext()
        self.backbone = build_backbone(config.backbone)
        spec = self.backbone.spec
        self.init_normalisation(spec)
        for p in self.backbone.parameters():
            p.requires_grad_(config.finetune == "full")
        self.context.modality_dims = {m.name: m.dim for m in config.modalities}
        self.context.modality_tokens = {m.name: max(m.tokens, 1) for m in config.modalities}
        inject_adapters(self.backbone, spec, config.adapters, self.context)
        prepare_adapters(self, config.adapters)
        self.head = nn.Sequential(nn.Dropout(config.head.dropout), nn.Linear(spec.feature_dim, num_outputs))

    @property
    def spec(self):
        return self.backbone.spec

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
