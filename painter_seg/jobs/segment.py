"""The few-shot segmentation job (``painter-seg segment``): files in, masks, overlays and summary out."""
from __future__ import annotations

import glob
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from ..apps.few_shot import FewShotSegmenter, Prediction
from ..build import build_model
from ..errors import InputError
from ..io.files import atomic_path, ensure_output_dir
from ..io.images import load_image, overlay, save_image
from ..io.masks import load_mask, save_label_png
from ..strategies import TunedPrompt
from ..utils.dist import DistInfo
from ..utils.runtime import resolve_device

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def expand_targets(specs: Iterable[str]) -> tuple[list[Path], list[dict]]:
    """Files named by ``specs`` (files, folders of images, or glob patterns), in order, without repeats.

    Returns ``(files, failures)``; a spec that names nothing is a failure, not an exception.
    """
    files: list[Path] = []
    failures: list[dict] = []
    for spec in specs:
        spec = str(spec)
        p = Path(spec).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if not found:
                failures.append({"file": spec, "error": f"{spec}: folder holds no images"})
        elif p.exists():
            found = [p]
        elif glob.has_magic(spec):
            found = sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file())
            if not found:
                failures.append({"file": spec, "error": f"{spec}: pattern matches no files"})
        else:
            found = []
            failures.append({"file": spec, "error": f"{spec}: file not found"})
        for f in found:
            if f not in files:
                files.append(f)
    return files, failures


def _output_stems(files: Sequence[Path]) -> list[str]:
    """One output name per target: its stem, made unique by a numeric suffix when stems collide."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        n = seen.get(f.stem, 0)
        seen[f.stem] = n + 1
        out.append(f.stem if n == 0 else f"{f.stem}_{n + 1}")
    return out


@dataclass
class TargetResult:
    file: str
    size: tuple[int, int]
    classes: dict[int, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"file": self.file, "width": self.size[1], "height": self.size[0],
                "classes": {str(k): v for k, v in self.classes.items()}}


def write_outputs(out_dir: Path, stem: str, image: np.ndarray, pred: Prediction, palette: np.ndarray,
                  inputs: set[Path]) -> list[Path]:
    """Write ``stem_mask.png`` (palette PNG of ids), ``stem_overlay.png`` and ``stem_paint.png``."""
    paths = [out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png", out_dir / f"{stem}_paint.png"]
    for p in paths:
        if p.resolve() in inputs:
            raise InputError(f"{p}: output would overwrite an input file")
    save_label_png(paths[0], pred.labels, palette)
    save_image(paths[1], overlay(image, pred.labels, palette))
    save_image(paths[2], pred.paint)
    return paths


def id_palette(colors: dict[int, tuple[int, int, int]], stored: np.ndarray | None) -> np.ndarray:
    """256-entry palette for label PNGs: the prompt mask's own palette when it had one, else the colours the
    ids were painted with."""
    pal = np.zeros((256, 3), np.uint8)
    if stored is not None:
        pal[: len(stored)] = stored[:256]
    for i, c in colors.items():
        if stored is None or not stored[i].any():
            pal[i] = c
    return pal


def run(cfg: DictConfig) -> int:
    """Run the few-shot job described by ``cfg`` (see ``conf/segment.yaml``); returns the exit code
    (0 = every target segmented, 1 = some target failed; bad prompts/arguments raise InputError)."""
    dist = DistInfo.from_env()
    out_dir = ensure_output_dir(Path(cfg.output_dir))
    device = resolve_device(cfg.device)
    p = cfg.prompt
    use_tuned = cfg.strategy.name == "tuned"
    if use_tuned and not p.get("tuned"):
        raise InputError("strategy=tuned needs prompt.tuned=<file.safetensors> (from tools/tune_prompt.py)")
    if p.get("tuned") and not use_tuned:
        raise InputError(f"prompt.tuned={p.tuned}: a tuned prompt needs strategy=tuned")
    kind, prompt_imgs, stored_palette = None, [], None
    kwargs: dict = {}
    if not use_tuned or cfg.strategy.get("extra_pairs", False):  # real example pairs
        if not p.images:
            raise InputError("prompt.images is empty: give at least one example image")
        prompt_imgs = [load_image(f, max_side=cfg.max_side) for f in p.images]
        kinds = [k for k in ("masks", "boxes", "scribbles") if p.get(k)]
        if len(kinds) != 1:
            raise InputError("give exactly one of prompt.masks, prompt.boxes or prompt.scribbles")
        kind = kinds[0]
        if use_tuned and kind != "masks":
            raise InputError("strategy.extra_pairs: give the extra pairs of a tuned prompt as prompt.masks")
        if len(p[kind]) != len(p.images):
            raise InputError(f"prompt.images has {len(p.images)} files but prompt.{kind} has {len(p[kind])}")
        if kind == "boxes":
            kwargs["boxes"] = [list(b) for b in p.boxes]
        else:
            loaded = [load_mask(f) for f in p[kind]]  # sizes are checked by FewShotSegmenter.set_prompts
            stored_palette = next((m.palette for m in loaded if m.palette is not None), None)
            kwargs[kind] = [m.labels for m in loaded]

    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=device)
    seg = FewShotSegmenter(model, strategy=cfg.strategy.name, seg_type=cfg.seg_type,
                           precision=cfg.precision, bg_threshold=cfg.bg_threshold,
                           resize_mode=cfg.resize_mode, resize_masks=cfg.resize_masks,
                           compile=bool(cfg.get("compile", False)))
    names = [str(f) for f in p[kind]] if kind in ("masks", "scribbles") else None
    if use_tuned:
        seg.set_tuned_prompt(TunedPrompt.load(p.tuned, model), prompt_imgs, kwargs.get("masks"), names=names)
    else:
        seg.set_prompts(prompt_imgs, names=names, **kwargs)
    palette = id_palette(seg.colors, stored_palette)

    files, failures = expand_targets(cfg.targets)
    stems = _output_stems(files)
    mine = list(zip(files, stems))[dist.rank :: dist.world_size]  # shard targets across torchrun ranks
    inputs = {Path(f).resolve() for f in [*(p.images if kind else []), *(p.get("masks") or []),
                                          *(p.get("scribbles") or []), *([p.tuned] if use_tuned else [])]}
    inputs |= {f.resolve() for f in files}
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    for f, stem in tqdm(mine, desc="segment", unit="img", disable=not dist.is_main and dist.world_size > 1):
        try:
            img = load_image(f, max_side=cfg.max_side)
            orig_hw = _original_size(f, img)
            pred = seg.predict(img)
            if orig_hw != img.shape[:2]:  # the image was downscaled on load: label map at the file's size
                pred = _upscale(pred, orig_hw)
                img = np.asarray(Image.fromarray(img).resize(orig_hw[::-1], Image.BILINEAR))
            write_outputs(out_dir, stem, img, pred, palette, inputs)
            classes = {i: {"area": a, "mean_score": round(pred.mean_scores()[i], 4)}
                       for i, a in pred.areas().items()}
            results[stem] = TargetResult(str(f), orig_hw, classes).to_json()
        except InputError as e:
            failures.append({"file": str(f), "error": str(e)})
            log.warning("%s", e)
    if not dist.is_main:  # failures of target specs are reported once, by rank 0
        failures = [x for x in failures if x["file"] in {str(f) for f, _ in mine}]
    summary = {
        "model": str(cfg.model.name), "checkpoint": str(cfg.checkpoint or cfg.model.checkpoint),
        "strategy": cfg.strategy.name, "seg_type": "instance" if seg.seg_type else "semantic",
        "prompts": ([{"tuned": str(p.tuned)}] if use_tuned else [])
        + ([{"image": str(i), kind: str(m)} for i, m in zip(p.images, p[kind])] if kind else []),
        "prompt_ids": {str(k): list(v) for k, v in seg.colors.items()},
        "targets": results, "failed": failures,
        "num_ok": len(results), "num_failed": len(failures), "seconds": round(time.perf_counter() - t0, 2),
    }
    if dist.world_size > 1:
        summary = dist.merge_summaries(out_dir, summary)
        if dist.is_main:  # back to the targets' order (ranks hold interleaved shards)
            summary["targets"] = {s: summary["targets"][s] for s in stems if s in summary["targets"]}
    if dist.is_main:
        with atomic_path(out_dir / "summary.json") as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2))
        for x in summary["failed"]:
            print(f"failed: {x['error']}")
        print(f"segmented {summary['num_ok']} target(s), {summary['num_failed']} failed -> {out_dir}")
    return 1 if summary["num_failed"] else 0


def _original_size(path: Path, img: np.ndarray) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees
                w, h = h, w
        return (h, w)
    except Exception:  # noqa: BLE001 - size is only a hint here
        return img.shape[:2]


def _upscale(pred: Prediction, hw: tuple[int, int]) -> Prediction:
    import cv2

    size = (hw[1], hw[0])
    return Prediction(
        labels=cv2.resize(pred.labels.astype(np.int32), size, interpolation=cv2.INTER_NEAREST).astype(np.int64),
        paint=cv2.resize(pred.paint, size, interpolation=cv2.INTER_LINEAR),
        scores=cv2.resize(pred.scores, size, interpolation=cv2.INTER_LINEAR),
        colors=pred.colors,
    )
