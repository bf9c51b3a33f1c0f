"""The video half of the evaluate job (``painter-seg evaluate task=vos``): DAVIS J&F, with baselines.

Two modes:

- ``pred=<dir> gt=<dir>``: score PNG masks already written (one sequence folder or a folder of them); writes
  ``per_sequence.csv`` and ``summary.json`` into ``output_dir`` (:func:`painter_seg.evaluation.vos.evaluate_vos`).
- ``root=<DAVIS folder>`` (``JPEGImages/480p``, ``Annotations/480p``) or ``clips=N`` (N generated
  multi-object clips written in that layout under ``output_dir/clips``): propagate the first mask of every
  sequence with each of ``methods`` (``ours`` = the model's ``video:`` settings, ``copy`` = the first mask on
  every frame, ``flow`` = the first mask carried by DIS optical flow, no model), score each, and write
  ``vos_report.json`` / ``vos_report.md``: per-sequence and mean J&F, frames/s, and for generated clips the
  id-swap count and per-object presence.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from ..apps.video import VideoPropagator, VideoSettings
from ..build import build_model
from ..data.folders import davis_sequence, list_davis_sequences
from ..errors import InputError
from ..evaluation.vos import evaluate_vos, id_consistency, read_index_mask
from ..io.files import atomic_path, ensure_output_dir
from ..io.masks import davis_palette, save_label_png
from ..utils.runtime import resolve_device
from .propagate import propagate_video

__all__ = ["METHODS", "run"]

METHODS = ("ours", "copy", "flow")


def run(cfg: DictConfig) -> int:
    """Score ``pred`` against ``gt``, or propagate and score every method on ``root`` / ``clips``."""
    if cfg.pred or cfg.gt:
        if not cfg.pred or not cfg.gt:
            raise InputError("task=vos needs pred=<dir> and gt=<dir> (or root=<DAVIS folder> / clips=N)")
        print(json.dumps(evaluate_vos(Path(cfg.pred), Path(cfg.gt), Path(cfg.output_dir)), indent=1))
        return 0
    if not cfg.root and not cfg.clips:
        raise InputError("task=vos needs pred=<dir> gt=<dir>, root=<DAVIS folder> or clips=N")
    out = ensure_output_dir(cfg.output_dir)
    root = write_clips(out / "clips", int(cfg.clips), first_seed=cfg.get("clips_seed", 0)) if cfg.clips \
        else Path(cfg.root)
    seqs = list(cfg.sequences) if cfg.sequences else list_davis_sequences(root)
    report = benchmark(cfg, root, seqs, out, synthetic=bool(cfg.clips))
    with atomic_path(out / "vos_report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    table = report_table(report)
    with atomic_path(out / "vos_report.md") as tmp:
        tmp.write_text(table)
    print(table)
    return 0


def write_clips(root: Path, n: int, size: tuple[int, int] = (240, 320), num_frames: int = 40,
                first_seed: int = 0) -> Path:
    """Write ``n`` generated clips (2-3 objects, occlusions, one object leaving and coming back; seeds
    ``first_seed`` .. ``first_seed + n - 1``) in the DAVIS layout under ``root``; returns ``root``."""
    from ..data.synthetic import generate_clip

    for seed in range(first_seed, first_seed + n):
        name = f"clip{seed:02d}_{2 + seed % 2}obj"
        frames, labels = generate_clip(seed, num_frames, size=size, num_objects=2 + seed % 2,
                                       leave_and_return=True)
        fdir = ensure_output_dir(root / "JPEGImages" / "480p" / name)
        adir = ensure_output_dir(root / "Annotations" / "480p" / name)
        for i, (f, lab) in enumerate(zip(frames, labels)):
            Image.fromarray(f).save(fdir / f"{i:05d}.jpg", quality=95)
            save_label_png(adir / f"{i:05d}.png", lab, davis_palette())
    return root


def _settings(method: str, cfg: DictConfig) -> VideoSettings:
    """``ours``: the model config's ``video:`` block; ``copy`` / ``flow``: the baselines (``flow`` warps as ours
    does: with its occlusion handling when ours has it)."""
    ours = VideoSettings.from_config(cfg.model.get("video"))
    if method == "ours":
        return ours
    if method == "copy":
        return VideoSettings.copy_first()
    if method == "flow":
        return VideoSettings.flow_only(occlusion=ours.occlusion)
    raise InputError(f"methods: unknown method {method!r}; expected some of {', '.join(METHODS)}")


def benchmark(cfg: DictConfig, root: Path, seqs: list[str], out: Path, synthetic: bool = False) -> dict:
    """Propagate and score every method of ``cfg.methods`` on ``seqs`` of ``root``."""
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=resolve_device(cfg.device))
    report: dict = {"root": str(root), "sequences": seqs, "methods": {}}
    for method in cfg.methods:
        prop = VideoPropagator(model, _settings(method, cfg), seg_type="instance", precision=cfg.precision)
        frames, secs = 0, 0.0
        for seq in seqs:
            frame_paths, ann_paths = davis_sequence(root, seq)
            if not ann_paths:
                raise InputError(f"{root}: sequence {seq} has no annotations")
            s = propagate_video(prop, frame_paths[0].parent, ann_paths[0], out / method / seq,
                                overwrite=True, write_overlay=False, show_progress=False)
            frames, secs = frames + s["written"] - 1, secs + s["seconds"]
        summary = evaluate_vos(out / method, ann_paths[0].parent.parent, out / "scores" / method,
                               sequences=seqs)
        row = {k: summary[k] for k in ("J&F-Mean", "J-Mean", "F-Mean")}
        row["fps"] = round(frames / secs, 3) if secs > 0 else None
        row["per_sequence"] = _per_sequence(out / "scores" / method / "per_sequence.csv")
        row["settings"] = dataclasses.asdict(prop.settings)
        if synthetic:
            row["ids"] = _id_report(out / method, ann_paths[0].parent.parent, seqs)
        report["methods"][method] = row
    return report


def _per_sequence(csv_path: Path) -> dict[str, float]:
    with open(csv_path, newline="") as fh:
        return {r["sequence"]: float(r["J&F-Mean"]) for r in csv.DictReader(fh) if r["object"] == "mean"}


def _id_report(pred_root: Path, gt_root: Path, seqs: list[str]) -> dict:
    """Id swaps and presence per generated clip (see :func:`~painter_seg.evaluation.vos.id_consistency`)."""
    per = {}
    for seq in seqs:
        names = sorted(p.name for p in (gt_root / seq).glob("*.png"))
        gt = [read_index_mask(gt_root / seq / n) for n in names]
        pred = [read_index_mask(pred_root / seq / n) for n in names]
        per[seq] = id_consistency(gt, pred)
    return {"swaps": sum(r["swaps"] for r in per.values()),
            "min_presence": min(r["min_presence"] for r in per.values()),
            "returned": all(all(r["returns"].values()) for r in per.values()),
            "per_clip": {k: {"swaps": v["swaps"], "presence": {str(i): round(p, 3) for i, p in
                                                                v["presence"].items()},
                             "returns": {str(i): b for i, b in v["returns"].items()}}
                         for k, v in per.items()}}


def report_table(report: dict) -> str:
    """The report as a markdown table: one row per method, J&F per sequence, mean, frames/s."""
    seqs = report["sequences"]
    head = ["method", *seqs, "J&F", "J", "F", "frames/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in report["methods"].items():
        cells = [f"{100 * row['per_sequence'].get(s, np.nan):.1f}" for s in seqs]
        cells += [f"{100 * row[k]:.1f}" for k in ("J&F-Mean", "J-Mean", "F-Mean")]
        cells.append(f"{row['fps']}")
        line = "| " + " | ".join([method, *cells]) + " |"
        if "ids" in row:
            line += f" swaps {row['ids']['swaps']}, min presence {row['ids']['min_presence']:.2f}, " \
                    f"returned {row['ids']['returned']}"
        lines.append(line)
    return "\n".join(lines) + "\n"
