"""One record per backbone family: how to build it, what it accepts, its sizes and its weights files.

Each family module (``components/backbones/<family>.py``) defines its ``BackboneFamily`` and calls
``register_family`` once; ``components/backbones/__init__.py`` names the module (one ``register_module`` line),
which is imported when its family is first looked up (``family(name)``) or the families are listed: a run
on one family never imports another's library (timm, open_clip: seconds of a command's start). The
generic code reads only this registry: ``build_backbone`` the builder, ``components.weights`` the
published layouts (recognised from key names, converted to the family's own keys), the size guess
that names what a file fits, and the kwargs a file's shapes need when no named size fits.

A leaf module (it imports neither ``components.backbones`` nor ``components.weights``), so both read
it without importing each other.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

State = dict[str, torch.Tensor]
Converted = tuple[State, list[str]]  # the tensors under the family's own keys, and what was done


def _unchanged(layout: str, state: State) -> Converted:
    return state, []


def _no_guess(state: State) -> None:
    return None


@dataclass(frozen=True)
class PublishedLayout:
    """A key layout a library publishes weights in, recognised from the key names alone."""

    name: str  # e.g. "video_swin_release"
    description: str  # what a user reads: "Video Swin Transformer release / MMAction2 Swin (layers.N.blocks.M)"
    detect: Callable[[State], bool]
    order: int = 50  # detection order, lowest first (specific layouts before generic ones)


@dataclass(frozen=True)
class BackboneFamily:
    name: str  # model.backbone.family
    build: Callable[[Any], torch.nn.Module]  # BackboneConfig -> a PooledBackbone (or nn.Module with .spec)
    check_kwargs: Callable[[dict], dict]  # model.backbone.kwargs -> the same, or a ConfigError naming the key
    sizes: Callable[[], Iterable[str]]  # the named sizes (model.backbone.name values)
    layouts: tuple[PublishedLayout, ...] = ()  # the layouts this family's weights are published in
    reads: tuple[str, ...] = ()  # other families' layouts its loader also converts
    convert: Callable[[str, State], Converted] = _unchanged  # (layout, tensors) -> the family's keys
    guess_size: Callable[[State], str | None] = _no_guess  # family-keyed tensors -> the named size they fit
    # family-keyed tensors -> (a named size, kwargs over it) that build them, when no named size fits
    suggest_kwargs: Callable[[State], tuple[str, dict] | None] = _no_guess
    accepted_layouts: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepted_layouts", tuple(l.name for l in self.layouts) + tuple(self.reads))


_FAMILIES: dict[str, BackboneFamily] = {}
_MODULES: dict[str, str] = {}  # family name -> the module that registers it, not imported yet


def register_family(family: BackboneFamily) -> BackboneFamily:
    _FAMILIES[family.name] = family
    _MODULES.pop(family.name, None)
    return family


def register_module(name: str, module: str) -> None:
    """Family ``name`` is registered by ``module``, imported the first time the family is needed."""
    if name not in _FAMILIES:
        _MODULES[name] = module


def family(name: str) -> BackboneFamily | None:
    """The family called ``name`` (its module imported now if it was not yet), or None."""
    if name in _MODULES:
        importlib.import_module(_MODULES[name])
    return _FAMILIES.get(name)


def families() -> dict[str, BackboneFamily]:
    """Registered families by name (``import components.backbones`` registers the built-in ones)."""
    for name in list(_MODULES):
        family(name)
    return dict(_FAMILIES)


def published_layouts() -> list[tuple[PublishedLayout, BackboneFamily]]:
    """Every family's published layouts with their family, in detection order."""
    pairs = [(layout, fam) for fam in families().values() for layout in fam.layouts]
    return sorted(pairs, key=lambda p: p[0].order)
