"""Adapters: a registry of types (config + layer), injected by module replacement.

Importing this package registers the built-in adapter types.
"""

from components.adapters.base import AdapterConfig, AdapterLayer, ForwardContext, SiteInfo, TokenLayout
from components.adapters.registry import adapter_types, get_adapter_type, register_adapter
from components.adapters.wrapper import AdaptedModule
from components.adapters import bottleneck  # noqa: F401  (registers "bottleneck")

__all__ = [
    "AdapterConfig",
    "AdapterLayer",
    "AdaptedModule",
    "ForwardContext",
    "SiteInfo",
    "TokenLayout",
    "adapter_types",
    "get_adapter_type",
    "register_adapter",
]
