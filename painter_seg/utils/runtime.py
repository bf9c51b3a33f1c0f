"""Device and precision chosen at the edges (tools and apps), never inside the model."""
from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", *DTYPES)
"""Accepted ``precision`` values; ``auto`` is resolved per device by :func:`resolve_precision`."""

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""``/proc/cpuinfo`` flags of x86 CPUs that run bf16 matrix products natively."""

_warned: set[str] = set()  # one-time warnings already logged in this process


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> cuda if available else cpu; a CUDA request without CUDA is a one-line error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device={device}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device}: CUDA is not available on this machine (use device=cpu)")
    return dev


@functools.lru_cache(maxsize=4)
def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """Feature flags of this CPU from ``cpuinfo`` (Linux: the first ``flags`` line, or ``Features`` on ARM);
    an empty set where that file is missing or unreadable. Read once per process."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX-BF16), detected at run
    time: from :func:`cpu_flags`, else (no ``/proc/cpuinfo``) from torch's own CPU probe."""
    flags = cpu_flags()
    if flags:
        return bool(flags & CPU_BF16_FLAGS)
    probe = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    with contextlib.suppress(Exception):  # private torch API: absent or failing means "not known to have"
        return any(getattr(probe, name)() for name in checks if hasattr(probe, name))
    return False


def has_native_bf16(device: torch.device | str) -> bool:
    """bf16 runs natively on ``device``: CUDA with bf16 support, or a CPU with AVX512-BF16 / AMX."""
    device = torch.device(device)
    if device.type == "cuda":  # not counting emulation (torch's default would call a V100 bf16-capable)
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision to run on ``device``: ``"auto"`` -> ``bf16`` where the device has native bf16
    (:func:`has_native_bf16`), else ``fp32``. ``fp32``/``bf16``/``fp16`` are returned as asked; ``bf16`` on a
    CPU without native bf16 logs one warning (once per process) that it is emulated and slower than fp32.

    Raises:
        InputError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision}: expected one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warn_once("bf16-emulated", "precision=bf16: this CPU has no native bf16 (no avx512_bf16 or AMX); "
                  "bf16 is emulated and will be slower than fp32 (precision=auto picks fp32 here)")
    return precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` in auto|fp32|bf16|fp16 (``auto`` resolved by
    :func:`resolve_precision`; fp16 on CPU falls back to bf16 with a warning)."""
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        warnings.warn("fp16 autocast is not supported on CPU; using bf16", stacklevel=2)
        precision = "bf16"
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


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
