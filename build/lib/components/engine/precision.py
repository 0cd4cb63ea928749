"""Mixed precision: the autocast context for ``optim.amp`` and the gradient scaler fp16 needs."""

from __future__ import annotations

from contextlib import nullcontext

import torch

AMP_MODES = ("off", "auto", "bf16", "fp16")


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype, or None for full precision (off, or auto without CUDA bf16)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    device = torch.device(device)
    if amp == "off" or (amp == "auto" and (device.type != "cuda" or not torch.cuda.is_bf16_supported())):
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def autocast_for(device: torch.device, amp: str):
    dtype = amp_dtype(device, amp)
    return nullcontext() if dtype is None else torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler_for(device: torch.device, amp: str) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (its 5-bit exponent underflows small gradients); bf16 and fp32 keep
    fp32's range and need none. Its state (the current scale) is checkpointed with the optimizer."""
    device = torch.device(device)
    if amp_dtype(device, amp) is torch.float16:
        return torch.amp.GradScaler(device.type)
    return None
