#!/usr/bin/env python
"""Memory of video propagation over a long generated clip: does the process RSS stay flat?

    nice -n 10 python tools/benchmark_video_memory.py --frames 500 --context-frames 8 --size 128

A child process writes a generated clip of moving shapes (3 objects, one leaving and coming back) as PNG frames
to a temporary folder, so this process never holds more than the frame it is working on. Then
``VideoPropagator`` (``--model``, random weights unless ``--checkpoint``) propagates the first-frame mask
through it with K context frames, and the resident set size is sampled every ``--every`` frames (psutil if
installed, else ``VmRSS`` of ``/proc/self/status``). Prints a table of RSS at frames 50, 100, 200, ..., and
the slope after warm-up (least squares over the samples from ``--warmup`` on, in MiB per 100 frames); writes
the same to ``--output`` as JSON. Speed is not the point: keep frames small.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    """Resident set size of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("cannot read the RSS (no psutil, no /proc/self/status)")


def write_clip(folder: str, frames: int, size: int, seed: int) -> None:
    """Generate the clip and write ``00000.png``... and ``first_mask.npy`` (run in a child process)."""
    from PIL import Image

    from painter_seg.data.synthetic import generate_clip

    imgs, labels = generate_clip(seed, frames, size=(size, size), num_objects=3, leave_and_return=True)
    out = Path(folder)
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(out / f"{i:05d}.png")
    np.save(out.parent / "first_mask.npy", labels[0])


def checkpoints(n: int) -> list[int]:
    """Frames at which the table reports RSS: 50, 100, 200, 300, ... up to ``n``."""
    marks = [m for m in [50] + list(range(100, n + 1, 100)) if m <= n]
    return marks if (marks and marks[-1] == n) else marks + [n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--size", type=int, default=128, help="frame height and width in pixels")
    ap.add_argument("--context-frames", type=int, default=None,
                    help="K, the memory length (default: the model config's video.context_frames)")
    ap.add_argument("--model", default="seggpt_tiny")
    ap.add_argument("--checkpoint", default=None, help="weights (default: random init)")
    ap.add_argument("--overrides", nargs="*", default=[], help="model config dot-list, e.g. net.depth=2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--every", type=int, default=10, help="sample the RSS every N frames")
    ap.add_argument("--warmup", type=int, default=50, help="frames excluded from the slope")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="outputs/benchmarks/video_memory.json")
    args = ap.parse_args(argv)
    if args.frames < 4 or args.every < 1 or args.warmup >= args.frames:
        ap.error("need --frames >= 4, --every >= 1 and --warmup < --frames")

    import torch

    from painter_seg import build_model
    from painter_seg.apps.video import VideoPropagator

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="video_memory_") as tmp:
        frames_dir = Path(tmp) / "frames"
        frames_dir.mkdir()
        child = mp.get_context("spawn").Process(
            target=write_clip, args=(str(frames_dir), args.frames, args.size, args.seed))
        child.start()
        child.join()
        if child.exitcode != 0:
            print(f"error: generating the clip failed (exit code {child.exitcode})", file=sys.stderr)
            return 1
        first = np.load(Path(tmp) / "first_mask.npy")

        model = build_model(args.model, checkpoint=args.checkpoint, device=args.device, overrides=args.overrides,
                            pretrained=args.checkpoint is not None)
        prop = VideoPropagator(model, context_frames=args.context_frames)
        state = prop.init(frames_dir)
        prop.add_mask(state, 0, first)
        del first
        samples: list[tuple[int, float]] = [(0, rss_mib())]
        t0 = time.perf_counter()
        done = 0
        for idx, _labels in prop.propagate(state):
            done = idx + 1
            if done % args.every == 0 or done == args.frames:
                samples.append((done, rss_mib()))
                print(f"\rframe {done}/{args.frames}  RSS {samples[-1][1]:.1f} MiB", end="", file=sys.stderr,
                      flush=True)
        secs = time.perf_counter() - t0
        print(file=sys.stderr)
        fifo = len(state.recent) + sum(len(t.memory) for t in state.tracks.values())

    at = dict(samples)
    marks = [m for m in checkpoints(args.frames) if m in at]
    x = np.array([f for f, _ in samples if f >= args.warmup], np.float64)
    y = np.array([r for f, r in samples if f >= args.warmup], np.float64)
    slope = float(np.polyfit(x, y, 1)[0] * 100) if len(x) >= 2 else float("nan")
    report = {
        "model": args.model, "overrides": args.overrides, "checkpoint": args.checkpoint, "device": args.device,
        "threads": args.threads,
        "frames": args.frames, "size": [args.size, args.size], "context_frames": prop.context_frames,
        "settings": dataclasses.asdict(prop.settings),
        "fifo_length_at_end": fifo, "seconds": round(secs, 1),
        "rss_mib_at_start": round(samples[0][1], 1),
        "rss_mib": {str(m): round(at[m], 1) for m in marks},
        "rss_mib_max": round(max(r for _, r in samples), 1),
        "slope_mib_per_100_frames_after_warmup": round(slope, 3), "warmup_frames": args.warmup,
        "samples": [[f, round(r, 2)] for f, r in samples],
    }
    print(f"{args.model} ({prop.settings.decode}), K={prop.context_frames}, {args.size}x{args.size}, {args.frames} frames, "
          f"{secs:.0f} s; RSS before propagating {samples[0][1]:.1f} MiB")
    print(f"{'frame':>6}  {'RSS MiB':>8}")
    for m in marks:
        print(f"{m:>6}  {at[m]:>8.1f}")
    print(f"slope after frame {args.warmup}: {slope:+.3f} MiB per 100 frames; memory length {fifo}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
