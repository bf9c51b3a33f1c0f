"""Speed, memory and agreement of painter_seg's SegGPT against transformers' SegGptForImageSegmentation.

    painter-seg benchmark --model seggpt_tiny --repeats 5 --json bench.json
    painter-seg benchmark                                   # ViT-L geometry (minutes per configuration on CPU)
    painter-seg benchmark --model seggpt_tiny --configs 1prompt,fe4 --precisions fp32
    painter-seg benchmark --quality --episodes 20           # label maps of bf16/fp16 vs fp32
    painter-seg benchmark --process-rss                     # peak RSS of one ViT-L inference process

(``python tools/benchmark.py ...`` is the same.)

Speed mode. A transformers ``SegGptForImageSegmentation`` is built from ``--model``'s geometry (hidden size,
depth, heads, canvas, patch, MLP width, decoder width, ``merge_index``, ``feature_layers``), every tensor is
randomised, the model is saved with ``save_pretrained`` and loaded into ours with
``build_model(--model, checkpoint=<snapshot>)``: both hold the SAME weights. Per configuration
(workload x precision [x torch.compile]) both run on the same inputs in one process: ``--warmup`` calls each,
then ``--repeats`` timed calls, interleaved (ours, theirs, theirs, ours, ours, theirs, ...: the first of each
pair alternates so that neither side always runs on a cache the other one warmed). Each call is one complete
inference: ours through the strategy (``predict_torch``), theirs through ``forward``, both under
``torch.inference_mode`` and the precision's autocast. Reported: median milliseconds per call, ours/theirs
(and for bf16/fp16 rows, ours against theirs in fp32 on the same workload: ``ratio_vs_theirs_fp32``),
peak memory of one extra (untimed) call each, and max |ours - theirs| over the painted query halves.

Workloads (``--configs``):

* ``1prompt``: one prompt, one target (plain).
* ``fe4``, ``fe8``: K = 4 / 8 prompts for one target, feature ensemble. transformers gets the K prompts as a
  batch with ``feature_ensemble=True``. transformers averages the merge block (index ``merge_index``) over both
  streams, where the official code and ours average per stream (see seggpt_facts.md, 3.3). By default the HF
  merge layer is given the official behaviour (``--hf-ensemble official``, same cost) so that the outputs can be
  compared. The deviation from stock transformers is reported as ``max_abs_diff_vs_stock_hf``.
* ``se4``: K = 4 prompts tiled 2 x 2 into one prompt half (spatial ensemble). transformers has no equivalent:
  ours only, ratio n/a.
* ``batch4``: 4 independent targets with one prompt in one batch (plain).

Precisions (default): fp32, plus bf16 where the device runs it natively (CUDA with bf16, CPUs with
AVX512-BF16 or AMX; :func:`painter_seg.utils.runtime.has_native_bf16`), plus fp16 on CUDA. On a CPU without
native bf16, bf16 is emulated (several times slower than fp32): ask for it with ``--precisions fp32,bf16``.
With ``--compile auto`` (on CUDA) or ``on``, each of them runs again with both models under ``torch.compile``
(``torch._dynamo.reset()`` before each compiled configuration).

Peak memory is measured per configuration and per model, on one extra call after the timed ones
(:mod:`painter_seg.utils.profiling`: CUDA allocator peak, or the CPU's peak RSS delta).

Quality mode (``--quality``): ``--quality-model`` (default ``default``, the shipped model; skipped with a message
when its weights are missing) segments ``--episodes`` generated episodes through
``FewShotSegmenter(precision=...)`` in fp32, bf16 and (CUDA) fp16 (or ``--precisions``); reported: IoU of each
reduced-precision label map with the fp32 one (mean over the ids present in either map, then over episodes),
the share of identical pixels, and each precision's foreground IoU against the ground truth.

Work rate (on by default, ``--no-roofline`` skips it). The matrix-product work of one call of each workload is
counted once with ``torch.utils.flop_counter.FlopCounterMode`` on our model (:func:`count_gflop`); it is the
same for every precision. The matrix rate the device reaches is measured per precision on the model's own
largest product (the MLP's first linear layer on one prompt-target pair's tokens, weights already in that dtype,
median of 5 calls after warm-up). Each row then reports ``ours_gflops`` (work / ours' median time) and
``ours_mm_fraction``, that rate as a share of the measured matrix rate: 1.0 would mean that nothing but matrix
products at full speed was left, so ``gflop / mm_rate`` is a floor for the time of that precision on this
device.

``--json PATH`` writes every number printed (and the raw times) to PATH.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import build_model
from ..errors import InputError
from ..io.files import atomic_write_bytes
from ..model import SegGPT
from ..strategies import build_strategy
from ..utils.profiling import (
    count_gflop,
    cpu_memory_method,
    device_name,
    malloc_trim,
    matmul_rate,
    peak_mib,
    status_kb,
    timed,
)
from ..utils.runtime import autocast, has_native_bf16, resolve_device
from . import ArgumentParser

__all__ = ["WORKLOADS", "Workload", "build_pair", "main", "make_calls", "model_mm_shape", "smooth_inputs"]


@dataclass(frozen=True)
class Workload:
    """One benchmarked call: ``prompts`` example pairs for ``targets`` independent queries."""

    name: str
    strategy: str  # plain | feature_ensemble | spatial_ensemble
    prompts: int  # K prompt pairs
    targets: int  # independent query images per call
    hf: bool = True  # transformers has an equivalent

    def describe(self) -> str:
        return f"{self.strategy}, {self.prompts} prompt(s), {self.targets} target(s)"


WORKLOADS = {w.name: w for w in (
    Workload("1prompt", "plain", 1, 1),
    Workload("fe4", "feature_ensemble", 4, 1),
    Workload("fe8", "feature_ensemble", 8, 1),
    Workload("se4", "spatial_ensemble", 4, 1, hf=False),
    Workload("batch4", "plain", 1, 4),
)}
RESULT_FIELDS = ("workload", "precision", "compile", "prompts", "targets", "ours_ms", "theirs_ms", "ratio",
                 "ours_peak_mib", "theirs_peak_mib", "max_abs_diff")


# --------------------------------------------------------------------------------------------- models
def hf_config_for(model: SegGPT):
    """A ``transformers.SegGptConfig`` with our model's geometry."""
    import transformers

    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    return transformers.SegGptConfig(
        hidden_size=model.embed_dim, num_hidden_layers=model.depth, num_attention_heads=attn.num_heads,
        image_size=list(model.img_size), patch_size=model.patch_size, mlp_dim=mlp.fc1.out_features,
        decoder_hidden_size=model.decoder_embed_dim, pretrain_image_size=model.pretrain_grid * model.patch_size,
        merge_index=model.merge_index, intermediate_hidden_state_indices=list(model.feature_layers),
        layer_norm_eps=model.norm.eps, qkv_bias=attn.qkv.bias is not None,
        use_relative_position_embeddings=attn.use_rel_pos, drop_path_rate=0.0,
    )


def build_pair(name: str, seed: int, snapshot_dir: Path) -> tuple[SegGPT, torch.nn.Module]:
    """(ours, transformers) with the same random weights, both fp32, CPU, eval mode; the transformers
    snapshot is written to ``snapshot_dir`` and loaded into ours through the strict loader."""
    import transformers

    geometry = build_model(name, pretrained=False)
    torch.manual_seed(seed)
    hf = transformers.SegGptForImageSegmentation(hf_config_for(geometry)).eval()
    del geometry
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every tensor random (zero-initialised rel-pos tables and biases included)
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    hf.save_pretrained(snapshot_dir)
    ours = build_model(name, checkpoint=str(snapshot_dir)).eval()
    return ours, hf


class HfMergeLayerEnsemble:
    """Give transformers' merge layer the official per-stream feature ensemble (seggpt_facts.md, 3.3).

    transformers passes ``ensemble_cond = 2 if merge_index > i else 1``; the official code treats the merge
    block like the blocks before it (``2``). Only that one argument of that one layer changes; ``stock()``
    temporarily restores transformers' own behaviour.
    """

    def __init__(self, hf: torch.nn.Module, enabled: bool) -> None:
        self.layer = hf.model.encoder.layers[hf.config.merge_index]
        self.enabled = enabled
        eager = self.layer.forward

        def forward(hidden_states, ensemble_cond, *args, **kwargs):
            return eager(hidden_states, 2 if self.enabled else ensemble_cond, *args, **kwargs)

        self.layer.forward = forward

    @contextlib.contextmanager
    def stock(self):
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before


# --------------------------------------------------------------------------------------------- inputs
def smooth_inputs(n: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` smooth colour images and white-circle-on-black masks, both ``[n, 3, h, w]`` float32,
    ImageNet-normalised."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    imgs, masks = [], []
    for _ in range(n):
        a, b, c = rng.uniform(2, 8, 3)
        img = np.stack([np.sin(a * xx + rng.uniform(0, 6)), np.cos(b * yy + rng.uniform(0, 6)),
                        np.sin(c * (xx + yy))], -1)
        imgs.append((img - img.min()) / (img.max() - img.min()))
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        masks.append(np.repeat((((xx - cx) ** 2 + (yy - cy) ** 2) < r**2)[..., None], 3, -1).astype(float))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    to_t = lambda a: torch.from_numpy(((np.stack(a) - mean) / std).transpose(0, 3, 1, 2)).float()
    return to_t(imgs), to_t(masks)


def model_mm_shape(model: SegGPT, pairs: int = 1) -> tuple[int, int, int]:
    """``(M, K, N)`` of the model's largest product, the MLP's first linear layer, on the tokens of
    ``pairs`` prompt-target canvases (image and mask stream before the merge)."""
    fc1 = model.blocks[0].mlp.fc1
    return 2 * pairs * model.num_patches, fc1.in_features, fc1.out_features


# --------------------------------------------------------------------------------------------- speed
def make_calls(w: Workload, ours: torch.nn.Module, hf: torch.nn.Module | None, device: torch.device,
               precision: str, seed: int, half: tuple[int, int]):
    """``(ours_call, theirs_call or None)``; each returns the painted query halves ``[B, 3, h, w]``."""
    h, wd = half
    prompts, masks = smooth_inputs(w.prompts, h, wd, seed)
    queries, _ = smooth_inputs(w.targets, h, wd, seed + 1)
    prompts, masks, queries = prompts.to(device), masks.to(device), queries.to(device)
    strategy = build_strategy(w.strategy, ours)
    strategy.set_prompts(prompts, masks, seg_type=1)  # instance: transformers' default embedding type

    def ours_call() -> torch.Tensor:
        with torch.inference_mode(), autocast(device, precision):
            return strategy.predict_torch(queries)

    if hf is None or not w.hf:
        return ours_call, None

    def theirs_call() -> torch.Tensor:
        with torch.inference_mode(), autocast(device, precision):
            if w.strategy == "feature_ensemble":
                pred = hf(pixel_values=queries.expand(w.prompts, -1, -1, -1), prompt_pixel_values=prompts,
                          prompt_masks=masks, feature_ensemble=True, embedding_type="instance").pred_masks
                return pred[:1, :, h:]  # every row carries the same query half
            b = queries.shape[0]
            pred = hf(pixel_values=queries, prompt_pixel_values=prompts.expand(b, -1, -1, -1),
                      prompt_masks=masks.expand(b, -1, -1, -1), embedding_type="instance").pred_masks
            return pred[:, :, h:]

    return ours_call, theirs_call


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _round(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def _interleaved(calls: dict[str, Callable | None], repeats: int, device: torch.device
                 ) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Times (ms) and last outputs of ``repeats`` interleaved calls per side (the side that goes first
    alternates)."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    outs: dict[str, torch.Tensor] = {}
    for i in range(repeats):
        order = list(calls.items())
        if i % 2:
            order.reverse()
        for who, fn in order:
            if fn is not None:
                ms, outs[who] = timed(fn, device)
                times[who].append(ms)
    return times, outs


def _work_fields(res: dict, w: Workload, ours: SegGPT, device: torch.device, precision: str, seed: int,
                 work: dict) -> None:
    """Add ``gflop``, ``ours_gflops`` and ``ours_mm_fraction`` to ``res`` (the count cached per workload)."""
    if w.name not in work["gflop"]:  # the same work in every precision; counted on the eager model
        call = make_calls(w, ours, None, device, precision, seed, ours.half_size)[0]
        work["gflop"][w.name] = round(count_gflop(call), 3)
    rate = work["mm_rate"].get(precision)
    res["gflop"] = work["gflop"][w.name]
    gflops = res["gflop"] / (res["ours_ms"] / 1e3)
    res["ours_gflops"] = round(gflops, 1)
    res["ours_mm_fraction"] = round(gflops / rate["gflops"], 4) if rate else None


def run_config(w: Workload, precision: str, compiled: bool, ours: SegGPT, hf, merge_fix, args,
               device: torch.device, work: dict | None = None) -> dict:
    """One configuration; ``work`` (``{"gflop": {workload: GFLOP}, "mm_rate": {precision: matmul_rate}}``)
    adds the work-rate fields and caches each workload's count."""
    res: dict = {"workload": w.name, "precision": precision, "compile": compiled, "prompts": w.prompts,
                 "targets": w.targets, "strategy": w.strategy}
    ours_m, hf_m = ours, (hf if w.hf else None)
    if compiled:
        torch._dynamo.reset()
        ours_m = torch.compile(ours)
        hf_m = torch.compile(hf) if hf_m is not None else None
    ours_call, theirs_call = make_calls(w, ours_m, hf_m, device, precision, args.seed, ours.half_size)
    for _ in range(max(args.warmup, 2 if compiled else 0)):  # compiling happens during the first call
        ours_call()
        if theirs_call:
            theirs_call()
    times, outs = _interleaved({"ours": ours_call, "theirs": theirs_call}, args.repeats, device)
    t_ours, t_theirs = times["ours"], times["theirs"]
    res["ours_times_ms"] = [round(t, 3) for t in t_ours]
    res["theirs_times_ms"] = [round(t, 3) for t in t_theirs]
    res["ours_ms"] = round(statistics.median(t_ours), 3)
    res["theirs_ms"] = round(statistics.median(t_theirs), 3) if t_theirs else None
    res["ratio"] = round(res["ours_ms"] / res["theirs_ms"], 3) if t_theirs else None
    res["ours_peak_mib"] = _round(peak_mib(ours_call, device)) if args.memory else None
    res["theirs_peak_mib"] = _round(peak_mib(theirs_call, device)) if args.memory and theirs_call else None
    res["max_abs_diff"] = _max_diff(outs["ours"], outs["theirs"]) if "theirs" in outs else None
    if work is not None:
        _work_fields(res, w, ours, device, precision, args.seed, work)
    if w.strategy == "feature_ensemble" and theirs_call is not None and not compiled:
        if merge_fix.enabled:
            with merge_fix.stock():
                res["max_abs_diff_vs_stock_hf"] = _max_diff(outs["ours"], theirs_call())
        else:
            res["max_abs_diff_vs_stock_hf"] = res["max_abs_diff"]
    return res


def _fmt(x, spec: str) -> str:
    """``x`` formatted with ``spec``; None as a right-aligned n/a of the same width."""
    width = int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)
    return f"{'n/a':>{width}}" if x is None else format(x, spec)


HEADER = (f"{'configuration':<24} {'ours ms':>10} {'theirs ms':>10} {'ratio':>7} {'vs th.fp32':>10} "
          f"{'ours MiB':>9} {'theirs MiB':>10} {'max|diff|':>10} {'GFLOP/s':>9} {'of mm':>7}")


def print_row(name: str, r: dict) -> None:
    """One line of the speed table (``HEADER``'s columns) or ``skipped: why``."""
    if "skipped" in r:
        print(f"{name:<24} skipped: {r['skipped']}", flush=True)
        return
    print(f"{name:<24} {_fmt(r['ours_ms'], '10.1f')} {_fmt(r['theirs_ms'], '10.1f')} "
          f"{_fmt(r['ratio'], '7.2f')} {_fmt(r.get('ratio_vs_theirs_fp32'), '10.2f')} "
          f"{_fmt(r['ours_peak_mib'], '9.1f')} "
          f"{_fmt(r['theirs_peak_mib'], '10.1f')} {_fmt(r['max_abs_diff'], '10.2e')} "
          f"{_fmt(r.get('ours_gflops'), '9.1f')} {_fmt(r.get('ours_mm_fraction'), '7.2f')}", flush=True)


def default_precisions(device: torch.device) -> list[str]:
    """fp32, bf16 where the device runs it natively, fp16 on CUDA."""
    return (["fp32"] + (["bf16"] if has_native_bf16(device) else [])
            + (["fp16"] if device.type == "cuda" else []))


def _parse_precisions(text: str | None, device: torch.device) -> list[str]:
    if not text:
        chosen = default_precisions(device)
        if "bf16" not in chosen:
            print(f"bf16 not run: {device.type} has no native bf16 here (emulated bf16 is slower than fp32; "
                  "ask for it with --precisions fp32,bf16)")
        return chosen
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in chosen if p not in ("fp32", "bf16", "fp16")]
    if bad:
        raise InputError(f"--precisions: unknown {bad}; expected fp32, bf16, fp16")
    return chosen


def _speed_plan(args, device: torch.device) -> tuple[list[str], list[str], list[bool]]:
    """``(workload names, precisions, compile modes)`` from the arguments (one-line errors)."""
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in names if c not in WORKLOADS]
    if bad:
        raise InputError(f"--configs: unknown {bad}; available: {', '.join(WORKLOADS)}")
    precisions = _parse_precisions(args.precisions, device)
    compile_modes = {"off": [False], "on": [False, True], "auto": [False, True] if device.type == "cuda"
                     else [False]}[args.compile]
    return names, precisions, compile_modes


def _speed_meta(args, ours: SegGPT, device: torch.device) -> dict:
    return {
        "model": args.model, "device": str(device), "device_name": device_name(device),
        "torch": torch.__version__, "transformers": _hf_version(), "python": platform.python_version(),
        "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": args.warmup,
        "params": sum(p.numel() for p in ours.parameters()), "canvas": list(ours.img_size),
        "hf_feature_ensemble": args.hf_ensemble, "timing": "median of interleaved calls, ms",
        "memory_method": (("CUDA max_memory_allocated delta" if device.type == "cuda" else cpu_memory_method())
                          if args.memory else "off"),
    }


def _build_models(args, device: torch.device) -> tuple[SegGPT, torch.nn.Module]:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="bench_snapshot_") as tmp:
        t = time.perf_counter()
        ours, hf = build_pair(args.model, args.seed, Path(tmp) / "snapshot")
        print(f"built {args.model} twice with the same random weights "
              f"({sum(p.numel() for p in ours.parameters()):,} params) in {time.perf_counter() - t:.1f}s")
    return ours.to(device), hf.to(device)


def _measure_rates(ours: SegGPT, device: torch.device, precisions: list[str]) -> dict:
    rates = {p: matmul_rate(model_mm_shape(ours), device, p) for p in precisions
             if p != "fp16" or device.type == "cuda"}
    for p, r in rates.items():
        print(f"measured matrix rate, {p}: {r['gflops']:.0f} GFLOP/s "
              f"(F.linear {' x '.join(map(str, r['shape']))})")
    return rates


def _speed_row(name: str, precision: str, compiled: bool, results: dict, run: Callable[[], dict],
               device: torch.device) -> dict:
    """One row of the speed table: measured, skipped (fp16 on CPU) or failed to compile."""
    if precision == "fp16" and device.type != "cuda":
        return {"workload": name, "precision": precision, "compile": compiled,
                "skipped": "fp16 autocast needs CUDA"}
    try:
        row = run()
    except Exception as e:  # a failed compile must not end the whole run
        if not compiled:
            raise
        msg = (str(e).strip().splitlines() or [""])[0][:160]
        return {"workload": name, "precision": precision, "compile": compiled,
                "skipped": f"torch.compile failed: {type(e).__name__}: {msg}"}
    ref = results.get(f"{name}/fp32", {}).get("theirs_ms")  # the reference's fp32 time, same workload
    if precision != "fp32" and ref:
        row["ratio_vs_theirs_fp32"] = round(row["ours_ms"] / ref, 3)
    return row


def speed(args, device: torch.device) -> dict:
    """The speed table: every (compile mode, precision, workload) configuration, ours vs transformers."""
    names, precisions, compile_modes = _speed_plan(args, device)
    ours, hf = _build_models(args, device)
    merge_fix = HfMergeLayerEnsemble(hf, enabled=args.hf_ensemble == "official")
    meta = _speed_meta(args, ours, device)
    print(f"device {meta['device_name']}, torch {meta['torch']}, transformers {meta['transformers']}, "
          f"{meta['threads']} threads; memory: {meta['memory_method']}")
    work = None
    if args.roofline:
        work = {"gflop": {}, "mm_rate": _measure_rates(ours, device, precisions)}
        meta["mm_rate"] = work["mm_rate"]
    print(HEADER)
    results: dict[str, dict] = {}
    for compiled in compile_modes:
        for precision in precisions:
            for name in names:
                key = f"{name}/{precision}" + ("+compile" if compiled else "")
                run = lambda: run_config(WORKLOADS[name], precision, compiled, ours, hf,  # noqa: B023
                                         merge_fix, args, device, work)
                results[key] = _speed_row(name, precision, compiled, results, run, device)
                print_row(key, results[key])
    if work is not None:
        meta["gflop_per_call"] = work["gflop"]
    return {"meta": meta, "results": results}


# --------------------------------------------------------------------------------------------- process RSS
def process_rss(args, device: torch.device) -> dict:
    """What one inference process costs in memory (CPU). A random checkpoint of ``--model`` is written here;
    a fresh child process (``--rss-child``) loads it and runs two single-prompt fp32 calls. Reported, for the
    whole child process in MiB: VmRSS at start (interpreter, torch, libraries), after loading, after the
    first call, and the peak (VmHWM) over its whole life."""
    from ..checkpoint import save_checkpoint

    if device.type != "cpu" or not Path("/proc/self/status").exists():
        return {"skipped": "needs a CPU run on Linux (/proc/self/status)"}
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the painter_seg package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="bench_rss_") as tmp:
        ckpt = Path(tmp) / "weights.safetensors"
        save_checkpoint(build_model(args.model, pretrained=False).state_dict(), ckpt)
        child = [sys.executable, "-m", __name__, "--rss-child", str(ckpt), "--model", args.model,
                 "--seed", str(args.seed)] + (["--threads", str(args.threads)] if args.threads else [])
        r = subprocess.run(child, capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"--rss-child failed: {r.stderr.strip().splitlines()[-1:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"process RSS, {args.model} fp32, 1 prompt ({out['params']:,} params, one fresh process): at start "
          f"{out['rss_start_mib']:.0f} MiB, loaded {out['rss_loaded_mib']:.0f} MiB, after a call "
          f"{out['rss_after_call_mib']:.0f} MiB, peak {out['peak_mib']:.0f} MiB; after both calls (trimmed): "
          f"file-backed {out['rss_file_mib']:.0f} MiB (weights {out['weights_mib']:.0f} MiB + libraries), "
          f"anonymous {out['rss_anon_mib']:.0f} MiB")
    return out


def rss_child(args) -> None:
    """The child of :func:`process_rss`: load ``args.rss_child``, run two calls, print one JSON line."""
    mib = lambda field: round(status_kb(field) / 1024, 1)
    start = mib("VmRSS")
    model = build_model(args.model, checkpoint=args.rss_child).eval()
    loaded = mib("VmRSS")
    call, _ = make_calls(WORKLOADS["1prompt"], model, None, torch.device("cpu"), "fp32", args.seed,
                         model.half_size)
    call()
    after = mib("VmRSS")
    call()
    peak = mib("VmHWM")
    # What stays: the weights (file-backed pages of the memory-mapped checkpoint, counted in RSS once touched),
    # shared libraries (file-backed too) and the anonymous memory of the interpreter, libraries and allocator.
    malloc_trim()
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    print(json.dumps({"model": args.model, "params": sum(p.numel() for p in model.parameters()),
                      "weights_mib": round(weights, 1), "rss_start_mib": start, "rss_loaded_mib": loaded,
                      "rss_after_call_mib": after, "peak_mib": peak, "rss_file_mib": mib("RssFile"),
                      "rss_anon_mib": mib("RssAnon")}))


# --------------------------------------------------------------------------------------------- quality
def ids_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU of two label maps over the ids present in either."""
    ious = []
    for i in np.union1d(np.unique(a), np.unique(b)):
        x, y = a == i, b == i
        ious.append((x & y).sum() / max(1, (x | y).sum()))
    return float(np.mean(ious))


def _fg_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    ids = [i for i in np.unique(gt) if i > 0]
    if not ids:
        return float("nan")
    return float(np.mean([((pred == i) & (gt == i)).sum() / max(1, ((pred == i) | (gt == i)).sum())
                          for i in ids]))


def _quality_labels(model: SegGPT, args, precisions: list[str], strategy: str
                    ) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
    """Label maps per precision and the ground truths of ``args.episodes`` generated episodes."""
    from ..apps.few_shot import FewShotSegmenter
    from ..evaluation.few_shot import synthetic_episodes

    size = (model.img_size[1], model.img_size[1])
    labels: dict[str, list[np.ndarray]] = {p: [] for p in precisions}
    gts = []
    for ep in synthetic_episodes(args.episodes, args.shots, args.seed, size=size):
        gts.append(ep.query[1])
        for p in precisions:
            seg = FewShotSegmenter(model, strategy=strategy, seg_type=ep.seg_type, precision=p)
            seg.set_prompts([im for im, _ in ep.prompts], [m for _, m in ep.prompts])
            labels[p].append(seg.predict(ep.query[0]).labels)
    return labels, gts


def quality(args, device: torch.device) -> dict:
    """Label maps of each reduced precision against fp32 (and each against the ground truth)."""
    from ..config import available

    if args.quality_model not in available("model"):
        raise InputError(f"--quality-model {args.quality_model}: unknown model; expected one of "
                         f"{', '.join(available('model'))}")
    try:
        model = build_model(args.quality_model, checkpoint=args.checkpoint, device=device)
    except InputError as e:  # CheckpointError included: e.g. the shipped weights are not there yet
        if args.checkpoint:  # weights the user named are unusable: an error, not a skipped section
            raise
        print(f"quality: skipped, model {args.quality_model!r} has no usable weights ({e})")
        return {"skipped": str(e)}
    chosen = (_parse_precisions(args.precisions, device) if args.precisions  # bf16 even where emulated
              else ["bf16"] + (["fp16"] if device.type == "cuda" else []))
    precisions = ["fp32"] + [p for p in chosen if p != "fp32"]  # fp32 is the reference
    strategy = "plain" if args.shots == 1 else "feature_ensemble"
    t = time.perf_counter()
    labels, gts = _quality_labels(model, args, precisions, strategy)
    out: dict = {"model": args.quality_model, "checkpoint": args.checkpoint, "episodes": args.episodes,
                 "shots": args.shots, "strategy": strategy, "device": str(device),
                 "seconds": round(time.perf_counter() - t, 1), "precisions": {}}
    print(f"quality: {args.quality_model}, {args.episodes} episodes, {strategy}@{args.shots}, {device}")
    print(f"{'precision':<10} {'IoU vs fp32 (mean)':>19} {'(min)':>7} {'same pixels':>12} {'fg IoU vs GT':>13}")
    for p in precisions:
        ious = [ids_iou(a, b) for a, b in zip(labels[p], labels["fp32"])]
        same = [float((a == b).mean()) for a, b in zip(labels[p], labels["fp32"])]
        gt_iou = float(np.nanmean([_fg_iou(a, g) for a, g in zip(labels[p], gts)]))
        q = out["precisions"][p] = {
            "iou_vs_fp32_mean": round(float(np.mean(ious)), 5), "iou_vs_fp32_min": round(float(np.min(ious)), 5),
            "same_pixels": round(float(np.mean(same)), 5), "fg_iou_vs_gt": round(gt_iou, 5)}
        print(f"{p:<10} {q['iou_vs_fp32_mean']:>19.4f} {q['iou_vs_fp32_min']:>7.4f} {q['same_pixels']:>12.4f} "
              f"{q['fg_iou_vs_gt']:>13.4f}")
    return out


# --------------------------------------------------------------------------------------------- main
def _hf_version() -> str | None:
    try:
        import transformers

        return transformers.__version__
    except ImportError:
        return None


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="painter-seg benchmark", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="seggpt_vit_large",
                    help="model config (conf/model/<name>.yaml); seggpt_tiny for a quick run")
    ap.add_argument("--configs", default=",".join(WORKLOADS),
                    help=f"comma-separated workloads out of {', '.join(WORKLOADS)}")
    ap.add_argument("--precisions", default=None,
                    help="comma-separated fp32,bf16,fp16 (default: fp32, bf16 where native, fp16 on CUDA)")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                    help="also run every configuration under torch.compile (auto: on CUDA only)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per model and configuration")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per model first")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf-ensemble", choices=("official", "stock"), default="official",
                    help="transformers' merge layer under feature ensemble: official per-stream averaging "
                         "(comparable outputs) or transformers' own")
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory calls")
    ap.add_argument("--no-roofline", dest="roofline", action="store_false",
                    help="skip the FLOP count and the matrix-rate measurement")
    ap.add_argument("--json", type=Path, default=None, help="write all results to this file")
    ap.add_argument("--quality", action="store_true",
                    help="instead of speed: label maps of bf16 (and fp16 on CUDA) vs fp32 on generated episodes")
    ap.add_argument("--process-rss", action="store_true",
                    help="instead of speed: peak RSS of one process that loads --model from a file and runs "
                         "one single-prompt fp32 call (CPU)")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)  # internal: see process_rss
    ap.add_argument("--quality-model", default="default", help="model config for --quality")
    ap.add_argument("--checkpoint", default=None, help="weights for --quality-model (default: its own)")
    ap.add_argument("--episodes", type=int, default=20, help="generated episodes for --quality")
    ap.add_argument("--shots", type=int, default=1, help="prompts per episode for --quality")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    for flag, value in (("--threads", args.threads), ("--episodes", args.episodes), ("--shots", args.shots)):
        if value is not None and value < 1:
            ap.error(f"{flag}={value}: expected an integer >= 1")
    return args


def _check_json_path(path: Path) -> None:
    """``--json`` can be written (checked before the run, which takes minutes): not a folder, and no file
    stands where its folder must be."""
    from ..io.files import check_output_dir

    if path.is_dir():
        raise InputError(f"--json {path}: is a folder, not a file")
    check_output_dir(path.parent)


def _write_report(path: Path, args, report: dict) -> None:
    if args.process_rss:
        doc = {"mode": "process_rss", "process_rss": report}
    else:
        doc = {"mode": "quality", "quality": report} if args.quality else {"mode": "speed", **report}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(doc, indent=2).encode())
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 after a one-line ``error:`` (bad arguments, no transformers)."""
    args = parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured, also through a pipe
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args)
        return 0
    if not args.quality and not args.process_rss and _hf_version() is None:
        print("error: the speed benchmark compares with transformers: pip install transformers", file=sys.stderr)
        return 2
    try:
        if args.json:
            _check_json_path(args.json)
        device = resolve_device(args.device)
        if args.process_rss:
            report = process_rss(args, device)
        else:
            report = quality(args, device) if args.quality else speed(args, device)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        _write_report(args.json, args, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
