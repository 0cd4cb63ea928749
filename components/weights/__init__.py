"""The one place weights files are read: published formats in, the family's own state dict out.

``read_weights(path, key_hint=...)`` gives the tensors of any supported file (safetensors, torch
``weights_only`` with a data-only allow-list, TorchScript archives read without running code);
each family's loader (``load_*`` beside the family in ``components/backbones/``) converts a published
layout to the family's keys through the family records (``components.backbone_family``) and loads it
strictly (``strict``).
"""

from components.weights.reader import WeightsError, WeightsFile, read_weights, read_weights_file

__all__ = ["WeightsError", "WeightsFile", "read_weights", "read_weights_file"]
