"""Model kind ``multi_dataset``: one frozen backbone with shared adapters, one head per dataset.

Each clip goes to the head of its dataset (``batch["dataset_index"]``, an index into
``config.heads``; absent = dataset 0). ``logits`` is (B, W), W = the widest head: row i holds its
own head's outputs in columns [0, K_i) and zeros after, the layout of the packed target.

The loss is the heads' Task (``components/tasks/heads.py``): sample-weighted, the mean over the
batch's clips of each clip's own task loss (CE; BCE or MSE averaged over that head's outputs). The
mixing ratio then sets each dataset's share of the gradient (in expectation its weight), and a batch
of one dataset gives exactly that task's usual loss. A mean over the datasets present instead would
give a lone clip of one dataset the weight of fifteen clips of another.
"""

from __future__ import annotations

import torch
from torch import nn

from components.config import ConfigError
from components.classifier import VideoModel
from components.model_kind import side_inputs
from components.multihead.config import MultiDatasetModelConfig
from components.tasks import Heads


class MultiHeadModel(VideoModel):
    """VideoModel whose ``head`` is a ModuleDict of per-dataset heads (weights keys ``head.<name>.*``,
    so adapter-only checkpoints keep them like the single head)."""

    config_cls = MultiDatasetModelConfig
    multi_dataset = True
    with_datasets = "multi_dataset"

    def __init__(self, config: MultiDatasetModelConfig, num_outputs: int = 0, class_names: list[str] | None = None) -> None:
        names = [h.name for h in config.heads]
        if not names:
            raise ConfigError("model.heads: kind multi_dataset needs one head per dataset (filled from data.datasets)")
        if len(set(names)) != len(names):
            raise ConfigError(f"model.heads: head names must be unique, got {names}")
        self.heads = list(config.heads)
        task = Heads.from_configs(self.heads)
        self.width = task.num_outputs
        super().__init__(config, self.width)  # builds a single head and task, replaced below
        self.task = task  # the loss, routing and the packed target
        dim = self.spec.feature_dim
        self.head = nn.ModuleDict({
            h.name: nn.Sequential(nn.Dropout(config.head.dropout), nn.Linear(dim, h.num_outputs)) for h in self.heads
        })

    def predict(self, video: torch.Tensor, side: dict | None = None, side_mask: dict | None = None,
                dataset_index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, W) logits, each clip through its dataset's head (see the module docstring)."""
        feats = self.features(video, side, side_mask)  # (B, D)
        index = self.task.index(feats.shape[0], dataset_index, feats.device)
        logits = None
        for d, h in enumerate(self.heads):
            rows = (index == d).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            part = self.head[h.name](feats[rows])  # (n_d, K_d)
            if logits is None:
                logits = part.new_zeros(feats.shape[0], self.width)
            logits = logits.index_put((rows[:, None], torch.arange(h.num_outputs, device=rows.device)[None]), part)
        return logits if logits is not None else feats.new_zeros(0, self.width)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """VideoModel's protocol plus ``dataset_index`` (B,); ``target`` is packed (B, W)."""
        side, mask = side_inputs(batch, self.config.modalities)
        index = batch.get("dataset_index")
        logits = self.predict(batch["video"], side, mask, index)
        out = {"logits": logits}
        if "target" in batch:
            out["loss"] = self.task.loss(logits, batch["target"], index)
        return out

