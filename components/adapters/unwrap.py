"""A backbone's weights in its family's own key layout: the file a user would have downloaded.

After full fine-tuning on a source set (CM3T's premise when no published weights fit a domain),
this is what `model.backbone.checkpoint` of a later run loads: adapter wrappers are unwrapped
(``x.base_layer.y`` -> ``x.y``), adapter weights dropped, and the wrapper's root (``vit.`` for timm)
stripped, so the keys are exactly those of the upstream library's model. It lives with the adapters
(it knows their wrapper), so backbones never import adapters.
"""

from __future__ import annotations

import torch
from torch import nn

from components.adapters.wrapper import AdaptedModule


def native_backbone_state(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """``backbone``: a built family module (it carries ``spec``); returns CPU tensors."""
    root = backbone.spec.checkpoint_root
    wrapper_keys = _wrapper_names(backbone)
    out: dict[str, torch.Tensor] = {}
    for key, value in backbone.state_dict().items():
        parts = key.split(".")
        if any(".".join(parts[:i]) in wrapper_keys and parts[i] == "adapters" for i in range(1, len(parts))):
            continue  # an adapter's own weights
        native = ".".join(p for i, p in enumerate(parts)
                          if not (p == "base_layer" and ".".join(parts[:i]) in wrapper_keys))
        if not native.startswith(root):
            continue
        out[native[len(root):]] = value.detach().cpu().contiguous()
    return out


def _wrapper_names(module: nn.Module) -> set[str]:
    """Dotted names of the adapter wrappers inside ``module``."""
    return {name for name, m in module.named_modules() if isinstance(m, AdaptedModule)}
