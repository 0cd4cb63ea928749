"""Adapter registry: each adapter type is a config dataclass + a layer + one `register_adapter` line."""

from __future__ import annotations

from dataclasses import dataclass

from components.adapters.base import AdapterConfig, AdapterLayer
from components.config import register_polymorphic


@dataclass(frozen=True)
class AdapterType:
    name: str
    config_cls: type[AdapterConfig]
    layer_cls: type[AdapterLayer]


_REGISTRY: dict[str, AdapterType] = {}


def register_adapter(name: str, config_cls: type[AdapterConfig], layer_cls: type[AdapterLayer]) -> None:
    if name in _REGISTRY and _REGISTRY[name].config_cls is not config_cls:
        raise ValueError(f"adapter type {name!r} is already registered")
    _REGISTRY[name] = AdapterType(name, config_cls, layer_cls)


def get_adapter_type(name: str) -> AdapterType:
    if name not in _REGISTRY:
        raise KeyError(f"unknown adapter type {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def adapter_types() -> list[str]:
    return sorted(_REGISTRY)


register_polymorphic(AdapterConfig, lambda name: get_adapter_type(name).config_cls)
