"""The fine-tuning regularisers in a run: what a Train worker builds from them (their config checks:
pipelines/config_checks.py).

Keys (docs/regularisers.md): ``data.rand_augment`` (decoder actors, ``components/video/rand_augment.py``),
``data.mixup_alpha`` / ``cutmix_alpha`` / ``mix_prob`` / ``mix_switch_prob`` / ``mix_mode`` and
``optim.label_smoothing`` (a batch transform before each training forward, ``components/engine/mix.py``),
``optim.drop_path`` (hooks on the backbone's residual branches), ``optim.ema_decay`` / ``ema_warmup``
(validation, checkpoint weights and exports on the EMA copy; ``ema.pt`` in each checkpoint carries the
trained weights and the EMA on, so a resume continues both) and ``optim.layer_decay`` (optimizer
groups by block depth). All default to off.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from pipelines.config_checks import soft_targets

EMA_FILE = "ema.pt"


class WorkerRegularisers:
    """What one Train worker runs: drop-path hooks (at construction), the batch transform, the EMA."""

    def __init__(self, cfg, model: torch.nn.Module, num_outputs: int, rank: int = 0) -> None:
        from components.engine import ClipMix, TrainableEma, enable_drop_path

        d, o = cfg.data, cfg.optim
        if o.drop_path > 0:
            enable_drop_path(model, o.drop_path, cfg.model.backbone.num_frames)
        self.transform = None
        if soft_targets(cfg):
            import numpy as np

            np.random.seed((cfg.seed * 1009 + rank) % (1 << 32))  # timm's Mixup draws from numpy's global RNG
            self.transform = ClipMix(cfg.model.head.task, num_outputs, d.mixup_alpha, d.cutmix_alpha, d.mix_prob,
                                     d.mix_switch_prob, d.mix_mode, o.label_smoothing)
        self.ema = TrainableEma(model, o.ema_decay, o.ema_warmup) if o.ema_decay > 0 else None
        self.trainable = [p for p in model.parameters() if p.requires_grad]  # TrainableEma's order

    def evaluated(self):
        """The weights validation and checkpoints see: the EMA copy when there is one."""
        return self.ema.applied() if self.ema is not None else nullcontext()

    def checkpoint_files(self) -> dict:
        """Extra checkpoint files (name -> object to ``torch.save``); take them outside ``evaluated``."""
        return {EMA_FILE: self.ema.state_dict()} if self.ema is not None else {}

    def restore(self, directory: Path) -> None:
        """After ``restore_checkpoint``: the trained weights and the EMA back from ``ema.pt``. A
        checkpoint saved without EMA starts the EMA from its weights; one saved with EMA, resumed
        with it off, continues from its trained weights (not the EMA weights its weights file holds)."""
        from components.engine.ema import copy_into

        path = Path(directory) / EMA_FILE
        if not path.exists():
            return
        state = torch.load(path, weights_only=True)
        if self.ema is not None:
            self.ema.load_state_dict(state)
        else:
            copy_into(self.trainable, state["trained"])
