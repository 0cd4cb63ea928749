"""Video decoder backends behind one contract, chosen by name (``data.decoder``).

A backend is a module with two functions:
  probe(path, data=None) -> (num_frames, fps, height, width) as the container reports them;
  read(path, size, choose, data=None) -> uint8 (N, H, W, 3): opens the file (or ``data``, its bytes in
  memory, when given: a remote video, components/video/source.py), calls ``choose(num_frames, fps)``
  for the flat frame indices wanted (N of them, already clipped to [0, num_frames)), and returns
  those frames in that order, resized to size x size (None = native size).
Both raise ``VideoDecodeError`` naming the file. Modules are imported on first use, so naming a
backend never loads its native library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES: dict[str, str] = {}


def register(name: str, module: str) -> None:
    _MODULES[name] = module


register("decord", "components.video.decoders.decord_backend")
register("pyav", "components.video.decoders.pyav_backend")


def decoder_names() -> tuple[str, ...]:
    return tuple(_MODULES)


def get_decoder(name: str) -> ModuleType:
    if name not in _MODULES:
        raise ValueError(f"unknown video decoder {name!r}; known: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name])
