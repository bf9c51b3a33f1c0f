"""GPU check: one command that shows every inference path working on a GPU, with its numbers.

    python tools/gpu_check.py                           # ViT-L, random weights, cuda; < 8 min on one GPU
    python tools/gpu_check.py --device cpu --model seggpt_tiny --batches 1,2 --video-frames 3   # CPU smoke

A ``--model`` with random (seeded) weights, every tensor randomised, is checked on ``--device``:

* ``parity``: the device in fp32 (TF32 off) against the CPU in fp32 on the same single-prompt call: max and
  mean |difference| of the painted query half and the share of identical foreground pixels (``ok``: max
  difference <= ``--parity-tol``).
* ``precision``: label maps (foreground = painted brighter than mid-grey) of bf16 (where the device has it
  natively) and fp16 (CUDA) autocast against fp32 on ``--agree-batch`` targets: share of identical pixels,
  foreground IoU, max |difference|.
* ``matmul``: the device's measured matrix rate per precision (``F.linear`` on the model's MLP shape for the
  largest batch, and on an ``--mm-square`` square product): the peak of the two is the reference.
* ``throughput``: targets/s of the plain strategy at each of ``--batches`` targets per call (one prompt) and of
  the feature ensemble with ``--ensemble`` prompts (one target), per precision; each row's matrix work
  (FlopCounterMode), its GFLOP/s and their share of the measured matrix rate, and the peak memory of a call.
* ``compile``: the largest plain batch in the device's ``auto`` precision, eager vs ``torch.compile``
  (compile time of the first call, then the median), and the compiled output's max |difference|.
* ``tuning``: one prompt-tuning step (:class:`painter_seg.tuning.PromptTuner`, ``--tune-batch`` pairs).
* ``video``: frames/s of :class:`painter_seg.apps.video.VideoPropagator` over ``--video-frames`` generated
  frames (PNG files, read as a user's frames are), overall and once the context is full.
* peak memory: the allocator's peak (weights included) of every section, and of the whole run.

A section that fails is recorded as ``{"error": ...}`` and the others still run (exit status 1); sections past
``--max-minutes`` are skipped. Results go to ``--out`` as ``gpu_check.json`` and ``gpu_check.md`` (a markdown
table); the default is ``docs/benchmarks/gpu`` on CUDA and ``outputs/gpu_check`` on other devices, so that a
CPU smoke run never overwrites the GPU record.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import build_model
from ..codec import denormalize_tensor
from ..errors import InputError
from ..io.files import atomic_write_bytes, check_output_dir
from ..model import SegGPT
from ..strategies import build_strategy
from ..utils.profiling import count_gflop, device_name, matmul_rate, median_ms, peak_memory, timed
from ..utils.runtime import autocast, has_native_bf16, resolve_device, resolve_precision
from . import ArgumentParser
from .benchmark import model_mm_shape, smooth_inputs

__all__ = ["build_parser", "main", "run_check", "write_report"]

SECTIONS = ("parity", "precision", "matmul", "throughput", "tuning", "video", "compile")  # compile last: slowest


@dataclass
class Context:
    """What the sections share: the arguments, the model on the device and the running peak memory."""

    args: argparse.Namespace
    device: torch.device
    model: SegGPT
    cpu_reference: torch.Tensor | None = None  # fp32 CPU output of the parity call
    precisions: list[str] = field(default_factory=list)  # measured precisions, fp32 first
    auto: str = "fp32"  # the device's precision=auto
    results: dict = field(default_factory=dict)

    @property
    def half(self) -> tuple[int, int]:
        return self.model.half_size


# --------------------------------------------------------------------------------------------- inputs
def random_model(name: str, seed: int, overrides: list[str]) -> SegGPT:
    """``name``'s architecture with every tensor random (seeded), fp32, CPU, eval mode."""
    torch.manual_seed(seed)
    try:
        model = build_model(name, pretrained=False, overrides=overrides)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad --override surfaces as whatever the model's __init__ raises
        raise InputError(f"--override {' '.join(overrides)}: model {name} cannot be built with it "
                         f"({_first_line(e.__cause__ or e)})") from None
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised rel-pos tables and biases included
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def scene(h: int, w: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth colour image (uint8 ``[h, w, 3]``) with a bright disc, and its id map (int64 ``[h, w]``, the
    disc = 1); ``shift`` moves the disc right by that share of the width (a video's motion)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a, b = rng.uniform(2, 8, 2)
    img = np.stack([np.sin(a * xx + 1), np.cos(b * yy + 2), np.sin(3 * (xx + yy))], -1) * 0.25 + 0.35
    cx, cy, r = 0.25 * w / max(h, w) + shift * w / max(h, w), 0.5 * h / max(h, w), 0.12
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < r**2
    img[disc] = (0.9, 0.8, 0.2)
    return (img.clip(0, 1) * 255).astype(np.uint8), disc.astype(np.int64)


def plain_call(model: torch.nn.Module, device: torch.device, precision: str, targets: int, seed: int,
               strategy: str = "plain", prompts: int = 1) -> Callable[[], torch.Tensor]:
    """A call painting ``targets`` smooth queries under ``prompts`` prompt pairs: ``[B, 3, h, w]``."""
    h, w = model.half_size
    imgs, masks = smooth_inputs(prompts, h, w, seed)
    queries, _ = smooth_inputs(targets, h, w, seed + 1)
    strat = build_strategy(strategy, model)
    strat.set_prompts(imgs.to(device), masks.to(device), seg_type=1)
    queries = queries.to(device)

    def call() -> torch.Tensor:
        with torch.inference_mode(), autocast(device, precision):
            return strat.predict_torch(queries)

    return call


def foreground(paint: torch.Tensor) -> torch.Tensor:
    """Painted halves ``[B, 3, h, w]`` (normalised) -> bool ``[B, h, w]``: brighter than mid-grey."""
    return denormalize_tensor(paint.float().cpu()).mean(dim=1) > 0.5


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Share of identical foreground pixels, foreground IoU and max |a - b| of two painted batches."""
    fa, fb = foreground(a), foreground(b)
    union = int((fa | fb).sum())
    return {"same_pixels": round(float((fa == fb).float().mean()), 6),
            "fg_iou": round(int((fa & fb).sum()) / union, 6) if union else 1.0,
            "max_abs_diff": float((a.float().cpu() - b.float().cpu()).abs().max())}


# --------------------------------------------------------------------------------------------- sections
def check_parity(ctx: Context) -> dict:
    """The device in fp32 against the CPU reference (computed before the model moved)."""
    out = plain_call(ctx.model, ctx.device, "fp32", 1, ctx.args.seed)()
    ref = ctx.cpu_reference
    diff = (out.float().cpu() - ref).abs()
    res = {"reference": "cpu fp32", "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
           "same_pixels": agreement(out, ref)["same_pixels"], "tol": ctx.args.parity_tol}
    res["ok"] = res["max_abs_diff"] <= ctx.args.parity_tol
    return res


def check_precision(ctx: Context) -> dict:
    """Reduced-precision autocast against fp32 on the same batch."""
    n, seed = ctx.args.agree_batch, ctx.args.seed
    ref = plain_call(ctx.model, ctx.device, "fp32", n, seed)()
    res: dict = {"targets": n}
    for p in ("bf16", "fp16"):
        if p not in ctx.precisions:
            res[p] = {"skipped": "fp16 autocast needs CUDA" if p == "fp16" else
                      f"no native bf16 on this {ctx.device.type} (emulated bf16 is many times slower)"}
            continue
        res[p] = agreement(plain_call(ctx.model, ctx.device, p, n, seed)(), ref)
    return res


def check_matmul(ctx: Context) -> dict:
    """Measured matrix rate per precision; ``gflops`` is the best of the shapes tried."""
    shapes = {"model_shape": model_mm_shape(ctx.model, pairs=max(ctx.args.batches))}
    if ctx.args.mm_square:
        shapes["square"] = (ctx.args.mm_square,) * 3
    res = {}
    for p in ctx.precisions:
        rates = {k: matmul_rate(s, ctx.device, p) for k, s in shapes.items()}
        res[p] = {**rates, "gflops": max(r["gflops"] for r in rates.values())}
    return res


def _throughput_row(ctx: Context, precision: str, strategy: str, prompts: int, targets: int,
                    gflop: dict) -> dict:
    call = plain_call(ctx.model, ctx.device, precision, targets, ctx.args.seed, strategy, prompts)
    key = (strategy, prompts, targets)
    if key not in gflop:  # the same matrix work in every precision
        gflop[key] = count_gflop(call)
    ms = median_ms(call, ctx.device, ctx.args.repeats, ctx.args.warmup)
    with peak_memory(ctx.device) as peak:
        call()
    rate = ctx.results.get("matmul", {}).get(precision, {}).get("gflops")
    gflops = gflop[key] / (ms / 1e3)
    return {"precision": precision, "strategy": strategy, "prompts": prompts, "targets": targets,
            "ms": round(ms, 3), "targets_per_s": round(targets / (ms / 1e3), 3), "gflop": round(gflop[key], 3),
            "gflops": round(gflops, 1), "mm_fraction": round(gflops / rate, 4) if rate else None,
            "peak_mib": peak["mib"]}


def check_throughput(ctx: Context) -> dict:
    """Plain at every batch size and the feature ensemble, per precision."""
    gflop: dict = {}
    rows = []
    for p in ctx.precisions:
        for b in ctx.args.batches:
            rows.append(_throughput_row(ctx, p, "plain", 1, b, gflop))
        rows.append(_throughput_row(ctx, p, "feature_ensemble", ctx.args.ensemble, 1, gflop))
    return {"rows": rows}


def check_compile(ctx: Context) -> dict:
    """Eager vs ``torch.compile`` on the largest plain batch in the device's auto precision."""
    if not ctx.args.compile:
        return {"skipped": "--compile off"}
    b, p, seed = max(ctx.args.batches), ctx.auto, ctx.args.seed
    eager = plain_call(ctx.model, ctx.device, p, b, seed)
    eager_ms = median_ms(eager, ctx.device, ctx.args.repeats, ctx.args.warmup)
    torch._dynamo.reset()
    compiled = plain_call(torch.compile(ctx.model), ctx.device, p, b, seed)
    first_ms, out = timed(compiled, ctx.device)
    compiled_ms = median_ms(compiled, ctx.device, ctx.args.repeats, warmup=1)
    return {"precision": p, "targets": b, "eager_ms": round(eager_ms, 3), "compiled_ms": round(compiled_ms, 3),
            "speedup": round(eager_ms / compiled_ms, 3), "compile_s": round(first_ms / 1e3, 1),
            "max_abs_diff": agreement(out, eager())["max_abs_diff"]}


def check_tuning(ctx: Context) -> dict:
    """Time of one prompt-tuning step (median over ``--tune-steps`` after a one-step warm-up fit)."""
    from ..tuning import PromptTuner, TuneConfig

    h, w = ctx.half
    pairs = [scene(h, w, ctx.args.seed + i, shift=0.05 * i) for i in range(ctx.args.tune_batch)]

    def fit(steps: int) -> dict:
        cfg = TuneConfig(steps=steps, batch_size=ctx.args.tune_batch, augment=None, val_fraction=0.0,
                         precision=ctx.auto, seed=ctx.args.seed)
        return PromptTuner(ctx.model, cfg).fit(pairs, progress=False).summary

    fit(1)  # warm-up (allocator, kernels)
    with peak_memory(ctx.device) as peak:
        summary = fit(ctx.args.tune_steps)
    return {"precision": summary["precision"], "batch": ctx.args.tune_batch, "steps": summary["steps"],
            "step_ms": round(summary["seconds"] * 1e3 / summary["steps"], 1), "peak_mib": peak["mib"]}


def _write_frames(folder: Path, n: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """``n`` frames of a disc moving right as PNG files in ``folder``; returns the first frame's id map."""
    from ..io.images import save_image

    first = None
    for i in range(n):
        img, labels = scene(*size, seed, shift=0.5 * i / max(1, n - 1))
        save_image(folder / f"{i:05d}.png", img)
        first = labels if first is None else first
    return first


def check_video(ctx: Context) -> dict:
    """Frames/s of the video propagator over generated frames (the first frame annotated)."""
    from ..apps.video import VideoPropagator

    a = ctx.args
    prop = VideoPropagator(ctx.model, context_frames=a.video_context, precision=ctx.auto)
    with tempfile.TemporaryDirectory(prefix="gpu_check_video_") as tmp:
        first = _write_frames(Path(tmp), a.video_frames, a.video_size, a.seed)
        state = prop.init(tmp)
        prop.add_mask(state, 0, first)
        stamps, fg = [], []
        with peak_memory(ctx.device) as peak:
            t0 = time.perf_counter()
            for _idx, labels in prop.propagate(state):
                stamps.append(time.perf_counter())
                fg.append(float((labels > 0).mean()))
    predicted = len(stamps) - 1  # the first frame is the annotation
    steady = stamps[a.video_context + 1:]  # frames predicted with a full context
    res = {"precision": ctx.auto, "frames": len(stamps), "size": list(a.video_size),
           "context_frames": prop.context_frames, "seconds": round(stamps[-1] - t0, 3),
           "frames_per_s": round(predicted / (stamps[-1] - stamps[0]), 3) if predicted else None,
           "steady_frames_per_s": (round((len(steady) - 1) / (steady[-1] - steady[0]), 3)
                                   if len(steady) > 1 else None),
           "mean_foreground": round(statistics.mean(fg), 4), "peak_mib": peak["mib"]}
    return res


CHECKS: dict[str, Callable[[Context], dict]] = {
    "parity": check_parity, "precision": check_precision, "matmul": check_matmul,
    "throughput": check_throughput, "tuning": check_tuning, "video": check_video, "compile": check_compile,
}


# --------------------------------------------------------------------------------------------- run
def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _meta(ctx: Context) -> dict:
    dev = ctx.device
    return {
        "model": ctx.args.model, "overrides": ctx.args.override, "weights": f"random (seed {ctx.args.seed})",
        "params": sum(p.numel() for p in ctx.model.parameters()), "canvas": list(ctx.model.img_size),
        "device": str(dev), "device_name": device_name(dev), "torch": torch.__version__,
        "cuda": torch.version.cuda, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "precisions": ctx.precisions, "auto_precision": ctx.auto, "tf32": False,
        "repeats": ctx.args.repeats, "warmup": ctx.args.warmup,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _setup(args: argparse.Namespace) -> Context:
    """The model (random weights) on the device, with the CPU fp32 reference of the parity call."""
    device = resolve_device(args.device)
    torch.set_float32_matmul_precision("highest")  # fp32 means fp32: no TF32 in matrix products...
    torch.backends.cudnn.allow_tf32 = False  # ...nor in convolutions
    model = random_model(args.model, args.seed, args.override)
    reference = plain_call(model, torch.device("cpu"), "fp32", 1, args.seed)().float()
    ctx = Context(args, device, model.to(device), cpu_reference=reference)
    ctx.precisions = ["fp32"] + (["bf16"] if has_native_bf16(device) else []) + (
        ["fp16"] if device.type == "cuda" else [])
    ctx.auto = resolve_precision("auto", device)
    return ctx


def run_check(args: argparse.Namespace) -> dict:
    """Every section of the check (each one's failure recorded, not raised) -> the report."""
    t0 = time.perf_counter()
    ctx = _setup(args)
    report: dict = {"meta": _meta(ctx), "sections": ctx.results}
    for name in SECTIONS:
        elapsed = time.perf_counter() - t0
        if elapsed > args.max_minutes * 60:
            ctx.results[name] = {"skipped": f"time budget ({args.max_minutes} min) spent"}
            continue
        t = time.perf_counter()
        try:
            with peak_memory(ctx.device) as peak:
                res = CHECKS[name](ctx)
        except Exception as e:  # noqa: BLE001 (a failing path is a finding: record it, run the rest)
            res = {"error": _first_line(e)}
            peak = {"mib": None}
        res["section_s"] = round(time.perf_counter() - t, 2)
        res["section_peak_mib"] = peak["mib"]
        ctx.results[name] = res
        print(f"{name}: {_one_line(res)}", flush=True)
    report["summary"] = summarize(report)
    report["meta"]["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _one_line(res: dict) -> str:
    if "error" in res or "skipped" in res:
        return res.get("error") or f"skipped ({res['skipped']})"
    shown = {k: v for k, v in res.items() if not isinstance(v, (dict, list))}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _values(tree, keys: tuple[str, ...]):
    """Every value under one of ``keys`` anywhere in nested dicts and lists."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k in keys and isinstance(v, (int, float)):
                yield v
            else:
                yield from _values(v, keys)
    elif isinstance(tree, list):
        for v in tree:
            yield from _values(v, keys)


def summarize(report: dict) -> dict:
    """The headline numbers and goals of the issue (None where a section did not run)."""
    s = report["sections"]
    rows = s.get("throughput", {}).get("rows", [])
    low = [r for r in rows if r["precision"] == "bf16" and r["strategy"] == "plain"]
    best = max((r["mm_fraction"] or 0.0 for r in low), default=None)
    peaks = list(_values(s, ("peak_mib", "section_peak_mib")))
    return {
        "parity_max_abs_diff": s.get("parity", {}).get("max_abs_diff"),
        "parity_ok": s.get("parity", {}).get("ok"),
        "bf16_same_pixels": s.get("precision", {}).get("bf16", {}).get("same_pixels"),
        "fp16_same_pixels": s.get("precision", {}).get("fp16", {}).get("same_pixels"),
        "plain_targets_per_s": {f"{r['precision']}@{r['targets']}": r["targets_per_s"]
                                for r in rows if r["strategy"] == "plain"},
        "bf16_best_mm_fraction": best,
        "goal_bf16_half_of_mm_rate": None if best is None else best >= 0.5,
        "compile_speedup": s.get("compile", {}).get("speedup"),
        "tune_step_ms": s.get("tuning", {}).get("step_ms"),
        "video_frames_per_s": s.get("video", {}).get("frames_per_s"),
        "peak_mib": max(peaks, default=None),
        "failed": [k for k, v in s.items() if "error" in v],
    }


# --------------------------------------------------------------------------------------------- report
def _cell(x) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e-2 or abs(x) >= 1e5 else f"{x:,.3f}".rstrip("0").rstrip(".")
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else str(x)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]


def to_markdown(report: dict) -> str:
    """The report as markdown: one line of context, the throughput table, then one row per section."""
    m, s = report["meta"], report["sections"]
    context = (f"{m['params']:,} parameters, canvas {m['canvas'][0]} x {m['canvas'][1]}; torch {m['torch']}, "
               f"CUDA {m['cuda']}; {m['date']}; {m.get('seconds')} s in all. `precision=auto` here: "
               f"{m['auto_precision']}. fp32 without TF32. Written by `python tools/gpu_check.py`.")
    lines = [f"# GPU check: {m['model']} (random weights), {m['device_name']}", "", context, ""]
    rows = s.get("throughput", {}).get("rows", [])
    if rows:
        lines += _table(["precision", "strategy", "prompts", "targets", "ms / call", "targets/s", "GFLOP/call",
                         "GFLOP/s", "share of matrix rate", "peak MiB"],
                        [[r["precision"], r["strategy"], r["prompts"], r["targets"], r["ms"], r["targets_per_s"],
                          r["gflop"], r["gflops"], r["mm_fraction"], r["peak_mib"]] for r in rows]) + [""]
    other = [[name, _one_line({k: v for k, v in res.items() if k != "rows"}) if isinstance(res, dict) else res]
             for name, res in s.items() if name != "throughput"]
    for p, r in s.get("matmul", {}).items():
        if isinstance(r, dict) and "gflops" in r:
            other.append([f"matrix rate {p}", f"{r['gflops']:,.0f} GFLOP/s"])
    for p in ("bf16", "fp16"):
        r = s.get("precision", {}).get(p)
        if isinstance(r, dict):
            other.append([f"{p} vs fp32", _one_line(r)])
    lines += _table(["check", "result"], other) + ["", "Summary: " + _one_line(
        {k: v for k, v in report["summary"].items() if not isinstance(v, dict)}), ""]
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    """``gpu_check.json`` and ``gpu_check.md`` in ``out`` (created); returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "gpu_check.json", out / "gpu_check.md"
    atomic_write_bytes(paths[0], (json.dumps(report, indent=2) + "\n").encode())
    atomic_write_bytes(paths[1], to_markdown(report).encode())
    return paths


# --------------------------------------------------------------------------------------------- main
def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    if not (h.isdigit() and w.isdigit()) or int(h) < 16 or int(w) < 16:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 480x854), got {text!r}")
    return int(h), int(w)


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="painter-seg gpu-check", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda[:N] | cpu | auto")
    ap.add_argument("--model", default="seggpt_vit_large", help="model config (random weights)")
    ap.add_argument("--override", action="append", default=[],
                    help="model config override, e.g. net.img_size=[224,112] (repeatable)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default docs/benchmarks/gpu on CUDA, else outputs/gpu_check)")
    ap.add_argument("--batches", type=_ints, default=[1, 8, 32], help="plain targets per call (1,8,32)")
    ap.add_argument("--ensemble", type=int, default=4, help="feature-ensemble prompts K")
    ap.add_argument("--agree-batch", type=int, default=4, help="targets of the bf16/fp16 agreement check")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    ap.add_argument("--mm-square", type=int, default=None,
                    help="side of the square matrix product also timed (default 8192 on CUDA, 0 = off)")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                    help="time torch.compile too (auto: on CUDA only)")
    ap.add_argument("--tune-batch", type=int, default=4, help="pairs per prompt-tuning step")
    ap.add_argument("--tune-steps", type=int, default=3, help="timed prompt-tuning steps")
    ap.add_argument("--video-frames", type=int, default=40, help="generated frames")
    ap.add_argument("--video-size", type=_size, default=(480, 854), help="frame size HxW")
    ap.add_argument("--video-context", type=int, default=8, help="context frames K of the propagator")
    ap.add_argument("--parity-tol", type=float, default=1e-3, help="max |CUDA - CPU| for parity ok")
    ap.add_argument("--max-minutes", type=float, default=7.5, help="skip the sections left after this")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    if min(args.ensemble, args.agree_batch, args.repeats, args.tune_batch, args.tune_steps) < 1 or \
            args.video_frames < 2 or args.warmup < 0 or args.video_context < 0:
        ap.error("--ensemble, --agree-batch, --repeats, --tune-batch, --tune-steps must be >= 1, "
                 "--video-frames >= 2, --warmup and --video-context >= 0")
    for flag, value in (("--max-minutes", args.max_minutes), ("--parity-tol", args.parity_tol),
                        ("--mm-square", args.mm_square)):
        if value is not None and not value >= 0:
            ap.error(f"{flag}={value}: expected a number >= 0")
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    args.compile = {"on": True, "off": False, "auto": cuda}[args.compile]
    args.mm_square = (8192 if cuda else 0) if args.mm_square is None else args.mm_square
    args.out = args.out or Path("docs/benchmarks/gpu" if cuda else "outputs/gpu_check")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the check and write its report; 0 when every section ran, 1 when one failed, 2 on bad input."""
    args = parse_args(argv)
    try:
        check_output_dir(args.out)  # before minutes of measurements, not after
        report = run_check(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = write_report(report, args.out)
    print(to_markdown(report))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 1 if report["summary"]["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
