"""Host (CPU) memory of a training process: glibc malloc's mmap threshold.

glibc serves a block below its mmap threshold from a heap arena, and keeps the holes that freed blocks
leave there. The threshold starts at 128 KiB and rises to the size of every mapped block freed, up to
32 MiB, so after a CPU training step's first frees all of a ViT-B step's activations (5-20 MiB each)
come from arenas. The holes they leave between longer-lived blocks are never returned: peak RSS runs
300-450 MiB above the live heap, and varies by as much from run to run (benchmarks/train_step.py).

A fixed threshold (``mallopt(M_MMAP_THRESHOLD)``) maps each block at least that big on its own and
unmaps it on free, so RSS follows live memory, at the price of page faults on every such allocation
(+5-10% CPU time for a ViT-B step at 4 MiB). ``model.grad_checkpointing`` already trades time for
memory, so ``auto`` sets it there; CUDA tensors do not go through malloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
AUTO_MIB = 4.0  # ``auto``'s threshold: every activation of a ViT-B/16 step is above it


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``: ``uordblks`` bytes in use in arenas, ``hblks`` / ``hblkhd`` mapped
    blocks and their bytes."""
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc with ``mallopt`` and ``mallinfo2`` (2.33+), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return None
    return libc


def mallinfo() -> MallInfo2 | None:
    """glibc's current heap statistics, or None off glibc."""
    libc = glibc()
    return libc.mallinfo2() if libc is not None else None


def mmap_threshold_mib(setting: float | str, grad_checkpointing: bool, device: torch.device | str) -> float:
    """The threshold ``scaling.host_mmap_mib`` asks for (0 = glibc's own, dynamic one)."""
    if setting == "auto":
        return AUTO_MIB if grad_checkpointing and torch.device(device).type == "cpu" else 0.0
    mib = float(setting)
    if mib < 0:
        raise ValueError(f"host_mmap_mib must be auto or >= 0, got {setting!r}")
    return mib


def set_mmap_threshold(mib: float) -> bool:
    """Fix glibc's mmap threshold at ``mib`` MiB for this process (0: leave glibc's default alone).
    False when nothing was set: 0, or a C library other than glibc (musl, macOS)."""
    libc = glibc()
    if mib <= 0 or libc is None:
        return False
    return libc.mallopt(M_MMAP_THRESHOLD, int(mib * 2**20)) == 1


def apply_mmap_threshold(setting: float | str, grad_checkpointing: bool, device: torch.device | str) -> float:
    """Set the threshold a training process on ``device`` gets from ``scaling.host_mmap_mib``; returns it
    in MiB (0 = glibc's default kept)."""
    mib = mmap_threshold_mib(setting, grad_checkpointing, device)
    set_mmap_threshold(mib)
    return mib
