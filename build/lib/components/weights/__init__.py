"""The one place weights files are read: published formats in, the family's own state dict out.

``read_weights(path, key_hint=...)`` gives the tensors of any supported file (safetensors, torch
``weights_only`` with a data-only allow-list, TorchScript archives read without running code);
``families.load_*`` convert a published layout to a backbone family's and load it strictly.
"""

from components.weights.reader import WeightsError, WeightsFile, read_weights, read_weights_file

__all__ = ["WeightsError", "WeightsFile", "read_weights", "read_weights_file"]
