"""Read a published weights file into a flat ``{name: tensor}`` dict without running code from it.

Formats, recognised from the bytes (not the suffix):
- safetensors: a JSON header and raw buffers (no pickle at all);
- torch files (``torch.save`` zip or the legacy format): ``torch.load(weights_only=True)`` whose
  restricted unpickler admits only the globals in ``SAFE_GLOBALS`` besides torch's own tensor
  rebuilders: numpy scalars, dtypes and arrays (MMAction2 / Video Swin ``meta``) and
  ``argparse.Namespace`` (timm's training ``args``); they only rebuild data;
- TorchScript archives (OpenAI CLIP ``ViT-B-16.pt``): read by ``components.weights.torchscript``,
  which rebuilds tensors and nothing else (the archive's code is never compiled or run).

Wrappers are unwrapped and said: ``state_dict`` / ``model`` / ``module`` / ``state_dict_ema`` dicts,
``module.`` (DDP) and ``backbone.`` (MMAction2) prefixes; classifier heads (``cls_head.*``) are
dropped here, family-specific heads where the family is known (``components.weights.strict``).
"""

from __future__ import annotations

import argparse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from components.weights.errors import WeightsError

DEFAULT_KEY = "model.backbone.checkpoint"


def _numpy_globals() -> list:
    """numpy objects a pickled numpy scalar/array/dtype refers to, under numpy 1.x and 2.x names."""
    from numpy.core import multiarray as legacy  # noqa: F401  (numpy 2 keeps the alias module)

    out: list = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.append((np._core.multiarray.scalar, f"{module}.scalar"))
        out.append((np._core.multiarray._reconstruct, f"{module}._reconstruct"))
    out += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return out


def safe_globals() -> list:
    """The allow-list handed to ``torch.serialization.safe_globals``: data builders only."""
    import warnings

    with warnings.catch_warnings():  # numpy.core is a deprecated alias of numpy._core
        warnings.simplefilter("ignore", DeprecationWarning)
        return _numpy_globals() + [argparse.Namespace]


@dataclass
class WeightsFile:
    """What was read: the tensors, the container format and what was unwrapped or dropped."""

    path: str
    format: str  # safetensors | torch | torchscript
    tensors: dict[str, torch.Tensor]
    wrapper: list[str] = field(default_factory=list)  # e.g. ["state_dict", "prefix backbone."]
    dropped: list[str] = field(default_factory=list)  # keys dropped here (classifier heads)
    metadata: dict = field(default_factory=dict)  # non-tensor top-level entries (names only)

    def describe(self) -> str:
        wrap = ", ".join(self.wrapper) or "none"
        return f"{self.format} file, wrapper: {wrap}, {len(self.tensors)} tensors"


def sniff_format(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":  # u64 header length, then a JSON header
        return "safetensors"
    if zipfile.is_zipfile(path):
        names = zipfile.ZipFile(path).namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch"
    return "torch"  # legacy (pre-1.6) torch.save format, or not a weights file at all


WRAPPER_KEYS = ("state_dict", "model", "module", "model_state", "state_dict_ema")
PREFIXES = ("module.", "backbone.", "model.")
HEAD_PREFIXES = ("cls_head.",)  # MMAction2's classifier: never part of a backbone


def _unwrap(obj, wrapper: list[str]):
    """The tensor dict inside a checkpoint dict: ``state_dict`` / ``model`` / ... (nested ok)."""
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        wrapper.append(key)
        obj = obj[key]
    return obj


def _strip_prefixes(tensors: dict[str, torch.Tensor], wrapper: list[str]) -> dict[str, torch.Tensor]:
    """Drop a prefix every (non-head) key shares: ``module.`` (DDP), ``backbone.`` (MMAction2)..."""
    changed = True
    while changed:
        changed = False
        body = [k for k in tensors if not k.startswith(HEAD_PREFIXES)]
        for p in PREFIXES:
            if body and all(k.startswith(p) for k in body):
                tensors = {k.removeprefix(p): v for k, v in tensors.items()}
                wrapper.append(f"prefix {p}")
                changed = True
    return tensors


def read_weights_file(path: str | Path, *, key_hint: str = DEFAULT_KEY) -> WeightsFile:
    """Read ``path`` (see the module docstring); errors are one line naming the file and ``key_hint``."""
    path = Path(path)
    where = f"{key_hint}: {path}"
    if not path.is_file():
        raise WeightsError(f"{where}: weights file not found")
    fmt = sniff_format(path)
    wrapper: list[str] = []
    meta: dict[str, str] = {}
    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as e:
            raise WeightsError(f"{where}: unreadable safetensors file ({type(e).__name__}: {e})") from None
    elif fmt == "torchscript":
        from components.weights.torchscript import read_torchscript_tensors

        obj = read_torchscript_tensors(path, where)
    else:
        obj = _torch_load(path, where)
    if isinstance(obj, dict):  # what else the checkpoint carries (meta, optimizer, args, ...)
        meta = {str(k): type(v).__name__ for k, v in obj.items() if not isinstance(v, torch.Tensor)}
    obj = _unwrap(obj, wrapper)
    if not isinstance(obj, dict):
        raise WeightsError(f"{where}: expected a dict of tensors, found {type(obj).__name__}")
    for k in wrapper:
        meta.pop(k, None)
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{where}: no tensors found (top-level keys: {sorted(map(str, obj))[:8]})")
    tensors = _strip_prefixes(tensors, wrapper)
    dropped = [k for k in tensors if k.startswith(HEAD_PREFIXES)]
    for k in dropped:
        del tensors[k]
    return WeightsFile(str(path), fmt, tensors, wrapper, dropped, meta)


def _torch_load(path: Path, where: str):
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            unsafe = []
        allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in safe_globals()}
        refused = [g for g in unsafe if g not in allowed]
        if refused:
            raise WeightsError(f"{where}: refused: the pickle refers to {', '.join(refused[:4])}, which could run "
                               "code when loaded; only tensors and plain data are read") from None
        raise WeightsError(f"{where}: not a readable weights file (safetensors, torch or TorchScript): {msg}") from None


def read_weights(path: str | Path, *, key_hint: str = DEFAULT_KEY) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped (see ``read_weights_file``)."""
    return read_weights_file(path, key_hint=key_hint).tensors
