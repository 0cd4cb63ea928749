"""Adapter registry: each adapter type is a config dataclass + a layer + one `register_adapter` line.

Each type also declares whether it folds into the frozen weights (``vidpeft export --merge``): a
mergeable layer has ``merge_into_base()``; any other type names, in one line, why it cannot be merged
(``not_mergeable=``). The registry is the one place export asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.adapters.base import AdapterConfig, AdapterLayer
from components.config import register_polymorphic


@dataclass(frozen=True)
class AdapterType:
    name: str
    config_cls: type[AdapterConfig]
    layer_cls: type[AdapterLayer]
    not_mergeable: str = ""  # why the type cannot be folded into the frozen weights; "" = it can

    @property
    def mergeable(self) -> bool:
        return not self.not_mergeable


_REGISTRY: dict[str, AdapterType] = {}


def register_adapter(name: str, config_cls: type[AdapterConfig], layer_cls: type[AdapterLayer],
                     not_mergeable: str = "") -> None:
    if name in _REGISTRY and _REGISTRY[name].config_cls is not config_cls:
        raise ValueError(f"adapter type {name!r} is already registered")
    can_merge = callable(getattr(layer_cls, "merge_into_base", None))
    if can_merge == bool(not_mergeable):
        raise ValueError(f"adapter type {name!r}: declare either a merge_into_base() method on "
                         f"{layer_cls.__name__} or, in one line, why it is not mergeable (not_mergeable=...)")
    _REGISTRY[name] = AdapterType(name, config_cls, layer_cls, not_mergeable)


def get_adapter_type(name: str) -> AdapterType:
    if name not in _REGISTRY:
        raise KeyError(f"unknown adapter type {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def adapter_types() -> list[str]:
    return sorted(_REGISTRY)


register_polymorphic(AdapterConfig, lambda name: get_adapter_type(name).config_cls)
