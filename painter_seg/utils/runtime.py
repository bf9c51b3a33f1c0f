"""Device and precision chosen at the edges (tools and apps), never inside the model."""
from __future__ import annotations

import contextlib
import warnings

import torch

from ..errors import InputError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> cuda if available else cpu; a CUDA request without CUDA is a one-line error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device}: CUDA is not available on this machine (use device=cpu)")
    return dev


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` in fp32|bf16|fp16 (fp16 on CPU falls back to bf16 with a warning)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        warnings.warn("fp16 autocast is not supported on CPU; using bf16")
        precision = "bf16"
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])
