"""Tensors of a TorchScript archive (``torch.jit.save``; OpenAI CLIP's ``ViT-B-16.pt``), no code run.

A TorchScript archive is a zip: ``code/`` holds the model's TorchScript source, ``data.pkl`` a pickle
of the module tree (each module an object of a ``__torch__.*`` class whose state is a dict of its
attributes: parameters, buffers, submodules, flags) and ``data/<key>`` the raw bytes of each tensor
storage. ``torch.jit.load`` compiles ``code/`` and would run it; here it is never read.

Safety: ``data.pkl`` is read by an ``Unpickler`` whose ``find_class`` returns, for every global the
pickle names, a stand-in written here: ``__torch__.*`` classes become an inert record that only
stores its state dict; ``torch._utils._rebuild_tensor_v2`` becomes a function that views the storage
bytes as a tensor; ``torch.*Storage`` names become dtypes; ``collections.OrderedDict`` and
``torch.jit._pickle.build_*list`` become plain containers. Any other global (``os.system``,
``builtins.eval``, a class with a malicious ``__reduce__``) is refused before anything is called,
so the pickle can only build dicts, lists, numbers, strings and tensors.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict

import torch

from components.weights.errors import WeightsError

# storage class names (as pickled) -> dtype
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class ScriptRecord:
    """Stand-in for a pickled ``__torch__.*`` module object: keeps its attribute dict, nothing else."""

    def __init__(self, *args, **kwargs) -> None:
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {}


def _record_class(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (ScriptRecord,), {"__qualname__": qualname})


def _plain_list(data, *_):
    return list(data)


def _restore_type_tag(value, _type_str):
    return value


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, where: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.root, self.where = archive, root, where
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _record_class(f"{module}.{name}")
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, requires_grad, hooks: data
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch.jit._pickle" and name.startswith("build_"):
            return _plain_list
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return _restore_type_tag
        raise pickle.UnpicklingError(f"refused global {module}.{name} (only tensors are read)")

    def persistent_load(self, pid):
        # ('storage', dtype-from-find_class, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        dtype, key = pid[1], str(pid[2])
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unknown storage type {dtype!r}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]

    @staticmethod
    def _rebuild_tensor(storage, offset, size, stride, *_):
        if not isinstance(storage, torch.Tensor):
            raise pickle.UnpicklingError("tensor without storage")
        return storage.as_strided(tuple(size), tuple(stride), int(offset)).clone()


def _flatten(record: ScriptRecord, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    """Module records -> dotted names, as ``Module.state_dict`` names them."""
    if depth > 64:
        raise pickle.UnpicklingError("module tree too deep")
    for name, value in record.state.items():
        if isinstance(value, ScriptRecord):
            _flatten(value, f"{prefix}{name}.", out, depth + 1)
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value


def read_torchscript_tensors(path, where: str) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archived module tree (``path``: a file or an open binary file), by
    dotted name."""

    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise WeightsError(f"{where}: TorchScript archive without data.pkl")
        root = pkl[0].split("/")[0]
        try:
            top = _TensorUnpickler(archive.read(pkl[0]), archive, root, where).load()
        except Exception as e:
            raise WeightsError(f"{where}: refused TorchScript archive: {e}") from None
    if not isinstance(top, ScriptRecord):
        raise WeightsError(f"{where}: TorchScript archive does not hold a module")
    out: dict[str, torch.Tensor] = {}
    _flatten(top, "", out)
    return out
