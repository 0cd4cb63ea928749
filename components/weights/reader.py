"""Read a published weights file into a flat ``{name: tensor}`` dict without running code from it.

Formats, recognised from the bytes (not the suffix):
- safetensors: a JSON header and raw buffers (no pickle at all);
- torch files (``torch.save`` zip or the legacy format) and plain pickles: the globals each pickle
  names are read from its opcodes (``pickletools``, nothing unpickled) and one outside the allow-list
  is refused by name; then ``torch.load(weights_only=True)`` whose
  restricted unpickler admits only the globals in ``safe_globals()`` besides torch's own tensor
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
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from components.io import StorageError, is_remote
from components.io import fs as storage
from components.weights.errors import WeightsError

Source = Path | bytes  # a local file, or a remote file's bytes (read whole, then read like a local one)


def _binary(src: Source):
    """A fresh binary file object on the weights."""
    return io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb")


def _is_zip(src: Source) -> bool:
    with _binary(src) as f:
        return zipfile.is_zipfile(f)

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


def sniff_format(path: Source) -> str:
    with _binary(path) as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":  # u64 header length, then a JSON header
        return "safetensors"
    if _is_zip(path):
        with _binary(path) as f:
            names = zipfile.ZipFile(f).namelist()
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


def weights_present(path: str | Path, *, key_hint: str = DEFAULT_KEY) -> bool:
    """Whether a local weights file or an s3:// / gs:// / https:// object is there; a store that cannot
    be reached or refuses the credentials is a WeightsError naming the URI and ``key_hint``."""
    try:
        return storage.exists(path)
    except StorageError as e:
        raise WeightsError(f"{key_hint}: {e}") from None


def read_weights_file(path: str | Path, *, key_hint: str = DEFAULT_KEY) -> WeightsFile:
    """Read ``path`` (see the module docstring); errors are one line naming the file and ``key_hint``.
    An s3://, gs:// or https:// URI is read whole into memory and then read like a local file."""
    where = f"{key_hint}: {path}"
    if is_remote(path):
        try:
            src: Source = storage.read_bytes(str(path))
        except StorageError as e:
            raise WeightsError(f"{key_hint}: {e}") from None
    else:
        src = path = Path(storage.local_path(path))
        if not path.is_file():
            raise WeightsError(f"{where}: weights file not found")
    fmt = sniff_format(src)
    wrapper: list[str] = []
    meta: dict[str, str] = {}
    if fmt == "safetensors":
        from safetensors.torch import load, load_file

        try:
            obj = load(src) if isinstance(src, bytes) else load_file(str(src))
        except Exception as e:
            raise WeightsError(f"{where}: unreadable safetensors file ({type(e).__name__}: {e})") from None
    elif fmt == "torchscript":
        from components.weights.torchscript import read_torchscript_tensors

        with _binary(src) as f:
            obj = read_torchscript_tensors(f, where)
    else:
        obj = _torch_load(src, where)
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


NOT_WEIGHTS = "not a readable weights file (safetensors, torch zip or pickle)"
PICKLES_IN_LEGACY_FILE = 5  # magic number, protocol, sys info, the object, storage keys; then raw bytes
STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


class _Bounded:
    """A file whose ``read(n)`` refuses to read past the end, so a bogus length in damaged bytes
    fails at once instead of reading the rest of a large file into memory."""

    def __init__(self, f, size: int) -> None:
        self.f, self.size = f, size

    def read(self, n: int = -1) -> bytes:
        if n is not None and n > self.size - self.f.tell():
            raise ValueError("length past the end of the file")
        return self.f.read(n)

    def readline(self) -> bytes:
        return self.f.readline()

    def tell(self) -> int:
        return self.f.tell()


def _globals_in_pickle(f) -> list[str]:
    """The globals one pickle names (``GLOBAL``, ``INST``, ``STACK_GLOBAL``), read from its opcodes
    with ``pickletools`` -- nothing is unpickled. Raises ``ValueError`` for bytes that are no pickle."""
    import pickletools

    found: list[str] = []
    pushed: list = []  # recent pushes: the string for a string op, else None (STACK_GLOBAL's operands)
    memo: dict = {}
    for op, arg, _ in pickletools.genops(f):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.append(".".join(str(arg).split(" ", 1)))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2:] if len(pushed) >= 2 else [None, None])
            found.append(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str)
                         else "<a global built at load time>")
            pushed.append(None)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in MEMO_OPS:
            memo[arg] = pushed[-1] if pushed else None
        elif name in GET_OPS:
            pushed.append(memo.get(arg))
        elif name in STRING_OPS:
            pushed.append(arg if isinstance(arg, str) else None)
        elif name not in ("PROTO", "FRAME", "STOP"):
            pushed.append(None)
        del pushed[:-4]
    return found


def _pickle_globals(path: Source) -> list[str] | None:
    """The globals named by the pickles a non-zip torch file (legacy ``torch.save``) or a plain pickle
    starts with; ``None`` when the file does not start with a pickle at all."""
    size = len(path) if isinstance(path, bytes) else path.stat().st_size
    found: list[str] = []
    with _binary(path) as raw:
        f = _Bounded(raw, size)
        for i in range(PICKLES_IN_LEGACY_FILE):
            try:
                found += _globals_in_pickle(f)
            except Exception:
                if i == 0:
                    return None
                break  # the raw storage bytes after a legacy file's pickles
            if f.tell() >= size:
                break
    return found


def _zip_pickle_globals(path: Source) -> list[str]:
    with _binary(path) as f, zipfile.ZipFile(f) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            return []
        return _globals_in_pickle(io.BytesIO(archive.read(pkl[0])))


def _refuse_unsafe_globals(names: list[str], where: str) -> None:
    """Refuse a pickle naming a global outside torch's weights_only allow-list and ours, by name."""
    from torch import _weights_only_unpickler as wou

    try:  # torch's private allow-list; without it, its weights_only loader (run next) still refuses
        allowed = set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except AttributeError:
        return
    refused = list(dict.fromkeys(g for g in names if g not in allowed))
    if refused:
        raise WeightsError(f"{where}: refused: the pickle refers to {', '.join(refused[:4])}, which could run "
                           "code when loaded; only tensors and plain data are read")


def _torch_error(e: Exception) -> str:
    """torch.load's error as one short line, without its advice to load the file unsafely."""
    import re

    text = " ".join(str(e).split()) or type(e).__name__
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text)
        text = (f"unsupported global {found.group(1)}" if found
                else f"weights_only unpickler: {detail.group(1).strip(' .')}" if detail and detail.group(1).strip()
                else "not readable with weights_only")
    return re.split(r"\. (?:This is an internal|If you are seeing)", text)[0]


def _torch_load(path: Source, where: str):
    """A ``torch.save`` file (zip or legacy) or a plain pickle: its globals are checked against the
    allow-list from the opcodes first, so one naming anything else is refused by name and never
    unpickled; then ``torch.load(weights_only=True)`` reads it."""
    import warnings

    with _binary(path) as f:
        head = f.read(4)
    if not head:
        raise WeightsError(f"{where}: {NOT_WEIGHTS}: the file is empty")
    with torch.serialization.safe_globals(safe_globals()):
        if _is_zip(path):
            try:
                names = _zip_pickle_globals(path)
            except Exception as e:
                raise WeightsError(f"{where}: {NOT_WEIGHTS}: a damaged zip archive ({type(e).__name__}: "
                                   f"{_torch_error(e)})") from None
        elif head.startswith(b"PK"):
            raise WeightsError(f"{where}: {NOT_WEIGHTS}: a truncated or damaged zip archive") from None
        else:
            names = _pickle_globals(path)
            if names is None:
                raise WeightsError(f"{where}: {NOT_WEIGHTS}: its bytes are none of these") from None
        _refuse_unsafe_globals(names, where)
        try:
            with warnings.catch_warnings():  # a plain pickle's protocol: said as an error if it matters
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                with _binary(path) as f:
                    return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(f"{where}: {NOT_WEIGHTS}: {_torch_error(e)}") from None


def read_weights(path: str | Path, *, key_hint: str = DEFAULT_KEY) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped (see ``read_weights_file``)."""
    return read_weights_file(path, key_hint=key_hint).tensors
