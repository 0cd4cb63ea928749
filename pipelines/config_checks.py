"""The experiment config's own checks of the fine-tuning regularisers' keys, beside the config
(pipelines/config.py calls them; what a Train worker builds from the keys: pipelines/run/regularisers.py).

``check_data_regularisers`` / ``check_optim_regularisers`` are DataConfig's and OptimConfig's checks
(ValueError, prefixed with the section by the config loader); ``check_regularisers`` checks across
sections (what the model's head can take: ConfigError naming the key).
"""

from __future__ import annotations

from components.config import ConfigError
from components.engine.mix import MIX_MODES


def check_data_regularisers(d) -> None:
    """DataConfig's own checks (ValueError, prefixed with ``data`` by the config loader)."""
    for key in ("mixup_alpha", "cutmix_alpha"):
        if getattr(d, key) < 0:
            raise ValueError(f"{key} must be >= 0 (0 = off), got {getattr(d, key)}")
    for key in ("mix_prob", "mix_switch_prob"):
        if not 0 <= getattr(d, key) <= 1:
            raise ValueError(f"{key} must be in [0, 1], got {getattr(d, key)}")
    if d.mix_mode not in MIX_MODES:
        raise ValueError(f"mix_mode must be one of {MIX_MODES}, got {d.mix_mode!r}")
    if d.rand_augment:
        if not d.augment:
            raise ValueError("rand_augment runs in the training augmentation: set augment: true as well")
        from components.video.rand_augment import parse_rand_augment

        parse_rand_augment(d.rand_augment)


def check_optim_regularisers(o) -> None:
    """OptimConfig's own checks."""
    for key in ("label_smoothing", "drop_path", "ema_decay"):
        if not 0 <= getattr(o, key) < 1:
            raise ValueError(f"{key} must be in [0, 1) (0 = off), got {getattr(o, key)}")
    if not 0 < o.layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1] (1 = off), got {o.layer_decay}")


def mixing(cfg) -> bool:
    return cfg.data.mixup_alpha > 0 or cfg.data.cutmix_alpha > 0


def soft_targets(cfg) -> bool:
    """The training loss is against soft targets: clips mixed (mixup/cutmix) or labels smoothed."""
    return mixing(cfg) or cfg.optim.label_smoothing > 0


def check_regularisers(cfg) -> None:
    """Checks across sections: what the model's head can take."""
    if not soft_targets(cfg):
        return
    smoothing = cfg.optim.label_smoothing > 0
    key = "data.mixup_alpha / data.cutmix_alpha" if mixing(cfg) else "optim.label_smoothing"
    if cfg.model.kind != "classifier":
        raise ConfigError(f"{key}: mixup, cutmix and label smoothing are for model.kind classifier, "
                          f"not {cfg.model.kind} (set them to 0)")
    task = cfg.model.head.task
    if mixing(cfg) and task == "regression":
        raise ConfigError(f"{key}: mixup/cutmix mix class targets; model.head.task=regression has none (set them to 0)")
    if smoothing and task != "single_label":
        raise ConfigError(f"optim.label_smoothing: single_label heads only, not model.head.task={task}")
