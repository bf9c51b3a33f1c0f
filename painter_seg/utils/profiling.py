"""Measuring helpers for the benchmark jobs: wall time, matrix-product work, the device's matrix rate and
peak memory of one call.

Peak memory of one call (:func:`peak_mib`):

* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the memory allocated
  before the call (weights and inputs are not counted).
* CPU: the peak resident set size (RSS) delta. Freed heap memory is first handed back to the kernel
  (glibc ``malloc_trim(0)``), then the kernel's high-water mark is reset (``5`` written to
  ``/proc/self/clear_refs``, Linux >= 4.0); the result is ``VmHWM`` after the call minus ``VmRSS`` before it.
  Without ``clear_refs`` a thread samples ``VmRSS`` every 0.5 ms instead (may miss short peaks). Both count
  everything the process touched during the call: activations, the output, allocator slack.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .runtime import DTYPES

__all__ = ["count_gflop", "cpu_memory_method", "device_name", "malloc_trim", "matmul_rate", "median_ms",
           "peak_memory", "peak_mib", "status_kb", "timed"]

_STATUS = Path("/proc/self/status")


# --------------------------------------------------------------------------------------------- time
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """``(milliseconds, result)`` of one call of ``fn``; CUDA work is waited for on both sides."""
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return (time.perf_counter() - t) * 1e3, out


def median_ms(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device)[0] for _ in range(max(1, repeats)))


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's processor string (machine type when the platform gives none)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------------------------- work
def count_gflop(fn: Callable[[], Any]) -> float:
    """Matrix-product GFLOP of one call of ``fn`` (multiply-adds count 2): linear layers, convolutions,
    batched products, and the two products inside fused attention (which torch leaves uncounted for the CPU
    SDPA kernel used with a bias)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa(q, k, v, *args, out_shape=None, **kwargs):  # shapes: FlopCounterMode passes them, not tensors
        return sdpa_flop_count(q, k, v)

    cpu_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={cpu_flash: sdpa}) as fc:
        fn()
    return fc.get_total_flops() / 1e9


def matmul_rate(shape: tuple[int, int, int], device: torch.device, precision: str,
                repeats: int = 5) -> dict:
    """Measured GFLOP/s of ``F.linear`` of an ``[M, K]`` input and ``[N, K]`` weights in ``precision``
    (both already in that dtype; median of ``repeats`` calls after 2 warm-up calls).

    Args:
        shape: ``(M, K, N)``.
        precision: ``fp32`` | ``bf16`` | ``fp16``.

    Returns:
        ``{"shape": [M, K, N], "gflop": work of one call, "gflops": the rate}``.
    """
    m, k, n = shape
    dtype = DTYPES[precision]
    x = torch.randn(m, k, device=device, dtype=dtype)
    w = torch.randn(n, k, device=device, dtype=dtype)
    with torch.inference_mode():
        ms = median_ms(lambda: torch.nn.functional.linear(x, w), device, repeats, warmup=2)
    gflop = 2 * m * k * n / 1e9
    return {"shape": [m, k, n], "gflop": round(gflop, 3), "gflops": round(gflop / (ms / 1e3), 1)}


# --------------------------------------------------------------------------------------------- memory
def status_kb(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``RssFile``, ``RssAnon``...)."""
    with open(_STATUS) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in {_STATUS}")


def malloc_trim() -> None:
    """Hand freed heap memory back to the kernel (glibc only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_memory_method() -> str:
    """How :func:`peak_mib` measures on this machine's CPU, in words."""
    if not _STATUS.exists():
        return "unavailable"
    return ("peak RSS delta: malloc_trim(0), reset VmHWM via /proc/self/clear_refs, VmHWM after - VmRSS before"
            if _reset_hwm() else "peak RSS delta: VmRSS sampled every 0.5 ms - VmRSS before")


def _peak_cuda(fn: Callable[[], Any], device: torch.device) -> float:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    del out
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _peak_rss_sampled(fn: Callable[[], Any]) -> float:
    base = status_kb("VmRSS")
    top, done = [base], threading.Event()

    def sample() -> None:
        while not done.is_set():
            top[0] = max(top[0], status_kb("VmRSS"))
            time.sleep(0.0005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out = fn()
    top[0] = max(top[0], status_kb("VmRSS"))
    done.set()
    t.join()
    del out
    return max(0, top[0] - base) / 1024


def peak_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory (MiB) added by one call of ``fn`` (see the module docstring for the method); None on a
    CPU without ``/proc/self/status``."""
    gc.collect()
    if device.type == "cuda":
        return _peak_cuda(fn, device)
    if not _STATUS.exists():
        return None
    malloc_trim()
    if not _reset_hwm():
        return _peak_rss_sampled(fn)
    base = status_kb("VmRSS")
    out = fn()
    peak = status_kb("VmHWM")
    del out
    return max(0, peak - base) / 1024


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Absolute peak memory over the block, in MiB, put in the yielded dict's ``"mib"`` when the block ends:
    on CUDA the allocator's peak (weights and inputs included), on a CPU the process's peak RSS (``VmHWM``
    after resetting it); None where it cannot be measured.

        with peak_memory(device) as peak:
            run()
        print(peak["mib"])
    """
    out: dict = {"mib": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out["mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        return
    measurable = _STATUS.exists() and _reset_hwm()
    yield out
    if measurable:
        out["mib"] = round(status_kb("VmHWM") / 1024, 1)
