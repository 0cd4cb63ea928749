"""Inject adapters by module replacement at the sites a backbone spec names; freeze the rest."""

from __future__ import annotations

from torch import nn

from components.adapters.base import AdapterConfig, ForwardContext, SiteInfo
from components.adapters.registry import get_adapter_type
from components.adapters.wrapper import AdaptedModule
from components.backbones.spec import BackboneSpec
from components.config import ConfigError


def select_layers(layers: list[int], num_blocks: int, key: str = "layers") -> list[int]:
    """Block indices from a config list (negative = from the end, empty = all)."""
    if not layers:
        return list(range(num_blocks))
    out = []
    for i in layers:
        j = i + num_blocks if i < 0 else i
        if not 0 <= j < num_blocks:
            raise ConfigError(f"{key}: block index {i} out of range for a backbone with {num_blocks} blocks")
        out.append(j)
    return sorted(set(out))


def resolve_module(root: nn.Module, path: str) -> nn.Module:
    """``get_submodule`` that looks through AdaptedModule wrappers already in the path."""
    module = root
    for part in [p for p in path.split(".") if p]:
        if isinstance(module, AdaptedModule):
            module = module.base_layer
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
    return module


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = resolve_module(root, parent_path)
    if isinstance(parent, AdaptedModule):
        parent = parent.base_layer
    if name.isdigit():
        parent[int(name)] = new
    else:
        setattr(parent, name, new)


def inject_adapters(
    backbone: nn.Module, spec: BackboneSpec, configs: list[AdapterConfig], context: ForwardContext
) -> list[str]:
    """Attach every configured adapter; returns the wrapped module paths."""
    wrapped: list[str] = []
    for n, config in enumerate(configs):
        kind = get_adapter_type(config.type)
        for site_name in config.sites:
            if site_name not in spec.sites:
                raise ConfigError(
                    f"model.adapters.{n}.sites: {spec.family} has no site {site_name!r}; "
                    f"it has {sorted(spec.sites)}"
                )
        for i in select_layers(config.layers, len(spec.blocks), key=f"model.adapters.{n}.layers"):
            for site_name in config.sites:
                path = ".".join(p for p in (spec.blocks[i], spec.sites[site_name]) if p)
                module = resolve_module(backbone, path)
                if not isinstance(module, AdaptedModule):
                    site = SiteInfo(
                        path=path,
                        site=site_name,
                        block_index=i,
                        dim=spec.block_dims[i],
                        num_heads=spec.block_heads[i],
                        family=spec.family,
                        layout=spec.layouts[i],
                        context=context,
                        base=module,
                    )
                    module = AdaptedModule(module, site)
                    _replace(backbone, path, module)
                    wrapped.append(path)
                layer = kind.layer_cls(config, module.site)
                module.add(config.key, layer)
    return wrapped


def adapter_modules(model: nn.Module, key: str | None = None):
    """(qualified name, layer) for every adapter layer, optionally only those named ``key``."""
    for name, module in model.named_modules():
        if isinstance(module, AdaptedModule):
            for k, layer in module.adapters.items():
                if key is None or k == key:
                    yield f"{name}.adapters.{k}", layer
