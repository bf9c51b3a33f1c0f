"""Device and precision chosen at the edges (tools and apps), never inside the model."""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

import torch

from ..errors import InputError

log = logging.getLogger(__name__)

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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


class CompiledModel:
    """A model behind ``torch.compile`` that degrades to eager instead of failing.

    Calls go to the compiled module. If compiling fails (no C++ compiler for the CPU backend, an unsupported
    Python/platform, a graph break the backend cannot handle...), a one-line warning is logged and this call
    and every later one run the eager model. Everything else (attributes, methods such as ``query_mask``,
    ``parameters()``) is the eager model's, so strategies can hold this object in place of the model. The
    eager model is shared, not modified, and its numerics are unchanged when compilation is off.
    """

    def __init__(self, model: torch.nn.Module, **compile_kwargs: Any) -> None:
        self.eager = model
        self.compiled: Any = None
        self._succeeded = False  # a compiled call has worked (later failures must look like compile errors)
        try:
            self.compiled = torch.compile(model, **compile_kwargs)
        except Exception as e:  # noqa: BLE001 (any failure just means "run eager")
            log.warning("compile: torch.compile is unavailable (%s); running eager", _first_line(e))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                out = self.compiled(*args, **kwargs)
                self._succeeded = True
                return out
            except Exception as e:  # compile errors have many types (dynamo, inductor, C++ toolchain)
                if self._succeeded and not _is_compile_error(e):
                    raise
                out = self.eager(*args, **kwargs)  # an error of the model itself raises here, no warning
                log.warning("compile: torch.compile failed (%s); running eager", _first_line(e))
                self.compiled = None
                return out
        return self.eager(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.eager, name)


def _is_compile_error(e: BaseException) -> bool:
    """True for errors raised by dynamo / inductor (compilation) rather than by the model itself."""
    mod = type(e).__module__ or ""
    return mod.startswith(("torch._dynamo", "torch._inductor"))


def maybe_compile(model: torch.nn.Module, enabled: bool, **compile_kwargs: Any) -> Any:
    """``model`` itself when ``enabled`` is False, else a :class:`CompiledModel` (eager fallback)."""
    return CompiledModel(model, **compile_kwargs) if enabled else model


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``bf16`` on a CUDA device with bf16 support, else ``fp32`` (CPU bf16 autocast is slow
    on many CPUs); any other value is checked and returned."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else "fp32"
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision}: expected auto or one of {', '.join(PRECISIONS)}")
    return precision
