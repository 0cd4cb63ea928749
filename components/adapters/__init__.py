"""Adapters: a registry of types (config + layer), injected by module replacement.

Importing this package registers the built-in adapter types.
"""

from components.adapters.base import AdapterConfig, AdapterLayer, ForwardContext, SiteInfo, TokenLayout
from components.adapters.registry import adapter_types, get_adapter_type, register_adapter
from components.adapters.wrapper import AdaptedModule
from components.adapters import bottleneck  # noqa: F401  (registers "bottleneck")
from components.adapters import mhva  # noqa: F401  (registers "mhva")
from components.adapters import prefix  # noqa: F401  (registers "prefix")
from components.adapters import caa  # noqa: F401  (registers "caa")
from components.adapters import mmca  # noqa: F401  (registers "mmca")
from components.adapters import ted  # noqa: F401  (registers "ted")
from components.adapters import lora  # noqa: F401  (registers "lora")

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
