"""Building a model: every model kind, registered by name, and ``build_model``.

Kinds: ``classifier`` (``classifier.py``), ``m2clip`` (``m2clip/model.py``), ``multi_dataset``
(``multihead/model.py``). A new kind is a ``ModelKind`` subclass in its own module
(``model_kind.py`` says what it declares) plus one ``register_model_kind`` line below.
The names other modules import from here (ModelConfig, VideoModel, ...) are re-exported.
"""

from __future__ import annotations

from torch import nn

from components.classifier import VideoModel
from components.config import ConfigError
from components.m2clip.model import M2Clip
from components.model_config import FINETUNE_MODES, HeadConfig, ModalityConfig, ModelConfig  # noqa: F401
from components.model_kind import (MODEL_KINDS, ModelKind, model_kind, prepare_adapters, register_model_kind,  # noqa: F401
                                   side_inputs, zero_shot_kinds)
from components.multihead.model import MultiHeadModel
from components.param_counts import parameter_counts  # noqa: F401  (re-exported)

register_model_kind("classifier", VideoModel)
register_model_kind("m2clip", M2Clip)
register_model_kind("multi_dataset", MultiHeadModel)


def build_model(config: ModelConfig, num_outputs: int, class_names: list[str] | None = None) -> nn.Module:
    if num_outputs <= 0:
        raise ConfigError("model.head.num_outputs: must be positive (or 0 with a manifest that names its classes)")
    model = model_kind(config.kind)(config, num_outputs, class_names)
    if config.grad_checkpointing:
        from components.engine.checkpointing import enable_grad_checkpointing

        enable_grad_checkpointing(model)
    return model
