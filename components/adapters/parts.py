"""Which parts of an adapter train: ``train_only`` / ``freeze`` (staged training inside one adapter).

CM3T (Sec. 3.2) trains each modality's cross-attention adapter, then the AdapterFusion over them with
the adapters fixed. A vidpeft CAA holds its modalities' cross-attentions and their fusion in one
layer, so a stage selects parts of it by name: ``freeze: [fusion]`` trains the cross-attentions with
the fusion held at its init, ``train_only: [fusion]`` (with ``init_from`` the previous stage) trains
the fusion alone. A part is a submodule or parameter name inside the layer (``fusion``,
``keys.proj.audio``, ``up``, ``scale``); it matches a parameter whose name is the part or starts with
the part and a dot. A part that matches no parameter of any layer of the adapter is a config error.
"""

from __future__ import annotations

from torch import nn

from components.config import ConfigError


def _matches(name: str, part: str) -> bool:
    return name == part or name.startswith(part + ".")


def layer_parts(layers: list[nn.Module]) -> list[str]:
    """The adapter's top-level part names (for the error message)."""
    return sorted({n.split(".", 1)[0] for layer in layers for n, _ in layer.named_parameters()})


def select_parts(layers: list[nn.Module], train_only: list[str], freeze: list[str], where: str) -> None:
    """Freeze the parameters of ``layers`` (one adapter's layers, trainable) outside ``train_only``
    (if given) or inside ``freeze``. ``where`` names the config entry in errors."""
    if not train_only and not freeze:
        return
    names = {n for layer in layers for n, _ in layer.named_parameters()}
    for field, parts in (("train_only", train_only), ("freeze", freeze)):
        for part in parts:
            if not any(_matches(n, part) for n in names):
                raise ConfigError(f"{where}.{field}: {part!r} names no parameter of this adapter "
                                  f"(its parts: {layer_parts(layers)})")
    overlap = [p for p in train_only if any(_matches(p, f) or _matches(f, p) for f in freeze)]
    if overlap:
        raise ConfigError(f"{where}: {overlap} is both in train_only and in freeze")
    for layer in layers:
        for name, param in layer.named_parameters():
            keep = (not train_only or any(_matches(name, p) for p in train_only)) \
                and not any(_matches(name, p) for p in freeze)
            param.requires_grad_(keep and param.requires_grad)
