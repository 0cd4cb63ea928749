"""Fold mergeable adapters into the frozen weights: the adapted model at the frozen model's cost.

Every adapter type declares at registration whether it merges (``registry.py``). ``merge_adapters``
folds each mergeable layer into the weights of the module it wraps, drops it, and puts the bare
frozen module back where no adapter is left, so the merged model has the frozen backbone's parameters,
module structure and FLOPs. Other adapters stay as modules (``unmergeable`` lists them with their reason).
"""

from __future__ import annotations

from torch import nn

from components.adapters.base import AdapterConfig, ForwardContext
from components.adapters.registry import get_adapter_type
from components.adapters.wrapper import AdaptedModule


def unmergeable(configs: list[AdapterConfig]) -> list[str]:
    """One line per configured adapter that cannot be merged: its name and its type's declared reason."""
    lines = []
    for a in configs:
        kind = get_adapter_type(a.type)
        if not kind.mergeable:
            name = a.type if a.key == a.type else f"{a.type} ({a.key})"
            lines.append(f"{name}: not mergeable: {kind.not_mergeable}")
    return lines


def merge_adapters(model: nn.Module, configs: list[AdapterConfig]) -> list[str]:
    """Merge every adapter of a mergeable type in place; returns the merged adapters' keys."""
    keys = {a.key for a in configs if get_adapter_type(a.type).mergeable}
    wrappers = [(name, m) for name, m in model.named_modules() if isinstance(m, AdaptedModule)]
    for name, wrapper in wrappers:
        for key in [k for k in wrapper.adapters if k in keys]:
            wrapper.adapters[key].merge_into_base()
            del wrapper.adapters[key]
        if not len(wrapper.adapters):  # nothing left at this site: the frozen module itself again
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if child.isdigit():
                parent[int(child)] = wrapper.base_layer
            else:
                setattr(parent, child, wrapper.base_layer)
    for context in [v for v in vars(model).values() if isinstance(v, ForwardContext)]:
        # forget the merged layers (find_layer must not return them); M2-CLIP has one per tower
        context.layers = {k: v for k, v in context.layers.items() if k[1] not in keys}
    return sorted(keys)
