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
from ..codec import SegType, resolve_refine
from ..errors import InputError
from ..io.export import EXPORT_FORMATS, ExportItem, export_files, write_export
from ..io.files import atomic_path, ensure_output_dir
from ..io.images import load_image, overlay, save_image
from ..io.masks import load_mask, read_label_png, save_label_png
from ..tuning import TunedPrompt
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
                  guard: OutputGuard) -> list[Path]:
    """Write ``stem_mask.png`` (palette PNG of ids), ``stem_overlay.png`` and ``stem_paint.png``; every path is
    checked by ``guard`` first, so nothing is written when one of them may not be."""
    paths = [out_dir / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES]
    for path in paths:
        guard.check(path)
    save_label_png(paths[0], pred.labels, palette)
    save_image(paths[1], overlay(image, pred.labels, palette))
    save_image(paths[2], pred.paint)
    guard.written.update(x.name for x in paths)
    return paths


OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", "_paint.png")
SUMMARY = "summary.json"


@dataclass
class OutputGuard:
    """What the job may write in its output folder: never an input, never a file it did not write itself.

    A file already in the folder may only be replaced when an earlier run of this job wrote it (it is listed in
    that run's ``summary.json``) or ``overwrite=true`` was given; anything else is the user's and is kept.

    Attributes:
        out_dir: the output folder.
        inputs: resolved paths of every input of this run (prompts, masks, tuned prompt, targets).
        previous: file names the previous run in this folder wrote.
        overwrite: replace foreign files too (never inputs).
        written: file names this run wrote.
    """

    out_dir: Path
    inputs: set[Path]
    previous: set[str]
    overwrite: bool = False
    written: set[str] = field(default_factory=set)

    @classmethod
    def for_folder(cls, out_dir: Path, inputs: set[Path], overwrite: bool) -> OutputGuard:
        previous: set[str] = set()
        summary = out_dir / SUMMARY
        if summary.exists():
            try:
                old = json.loads(summary.read_text())
                previous = set(old.get("outputs") or [f"{stem}{x}" for stem in old["targets"]
                                                        for x in OUTPUT_SUFFIXES]) | {SUMMARY}
            except (ValueError, KeyError, TypeError, AttributeError):
                if not overwrite:
                    raise InputError(f"{summary}: exists and is not a painter-seg summary; not overwritten "
                                     f"(choose another output_dir, or overwrite=true)") from None
        return cls(out_dir, inputs, previous, overwrite)

    def owned(self) -> list[str]:
        """Names of the files in the output folder that painter-seg wrote: this run's and the earlier runs'
        still there (so a later run may replace any of them)."""
        return sorted(self.written | {n for n in self.previous - {SUMMARY} if (self.out_dir / n).exists()})

    def check(self, path: Path) -> None:
        if path.resolve() in self.inputs:
            raise InputError(f"{path}: output would overwrite an input file (choose another output_dir)")
        if path.exists() and not (self.overwrite or path.name in self.previous | self.written):
            raise InputError(f"{path}: exists and was not written by painter-seg; not overwritten (choose "
                             f"another output_dir, or overwrite=true)")


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


@dataclass
class PromptFiles:
    """The example pairs of ``cfg.prompt`` read from disk.

    Attributes:
        kind: ``"masks"``, ``"boxes"`` or ``"scribbles"``; None when only a tuned prompt is given.
        images: ``[H, W, 3]`` uint8 RGB prompt images.
        kwargs: the masks / boxes / scribbles for :meth:`FewShotSegmenter.set_prompts`.
        palette: the colours a prompt mask file carried (palette PNG or colour mask), else None.
    """

    kind: str | None = None
    images: list[np.ndarray] = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    palette: np.ndarray | None = None


def _read_prompts(cfg: DictConfig, use_tuned: bool) -> PromptFiles:
    p = cfg.prompt
    if use_tuned and not p.get("tuned"):
        raise InputError("strategy=tuned needs prompt.tuned=<file.safetensors> (from painter-seg tune)")
    if p.get("tuned") and not use_tuned:
        raise InputError(f"prompt.tuned={p.tuned}: a tuned prompt needs strategy=tuned")
    if use_tuned and not cfg.strategy.get("extra_pairs", False):
        return PromptFiles()
    if not p.images:
        raise InputError("prompt.images is empty: give at least one example image")
    kinds = [k for k in ("masks", "boxes", "scribbles") if p.get(k)]
    if len(kinds) != 1:
        raise InputError("give exactly one of prompt.masks, prompt.boxes or prompt.scribbles")
    kind = kinds[0]
    if use_tuned and kind != "masks":
        raise InputError("strategy.extra_pairs: give the extra pairs of a tuned prompt as prompt.masks")
    if len(p[kind]) != len(p.images):
        raise InputError(f"prompt.images has {len(p.images)} files but prompt.{kind} has {len(p[kind])}")
    out = PromptFiles(kind, [load_image(f, max_side=cfg.max_side) for f in p.images])
    if kind == "boxes":
        out.kwargs["boxes"] = [list(b) for b in p.boxes]
    else:
        loaded = [load_mask(f) for f in p[kind]]  # sizes are checked by FewShotSegmenter.set_prompts
        out.palette = next((m.palette for m in loaded if m.palette is not None), None)
        out.kwargs[kind] = [m.labels for m in loaded]
    return out


def _segmenter(cfg: DictConfig, prompts: PromptFiles, use_tuned: bool) -> FewShotSegmenter:
    """The predictor of ``cfg`` with its prompts set; a prompt set the strategy cannot take is an InputError."""
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=resolve_device(cfg.device))
    seg = FewShotSegmenter(model, strategy=cfg.strategy.name, seg_type=cfg.seg_type,
                           precision=cfg.precision, bg_threshold=cfg.bg_threshold,
                           resize_mode=cfg.resize_mode, resize_masks=cfg.resize_masks,
                           compile=bool(cfg.get("compile", False)), refine=cfg.get("refine", "auto"),
                           assign=cfg.get("assign", "auto"))
    p, kind = cfg.prompt, prompts.kind
    names = [str(f) for f in p[kind]] if kind in ("masks", "scribbles") else None
    if use_tuned:
        seg.set_tuned_prompt(TunedPrompt.load(p.tuned, model), prompts.images, prompts.kwargs.get("masks"),
                             names=names)
    else:
        seg.set_prompts(prompts.images, names=names, **prompts.kwargs)
    return seg


def _inputs(cfg: DictConfig, prompts: PromptFiles, files: Sequence[Path]) -> set[Path]:
    p = cfg.prompt
    named = [*(p.images if prompts.kind else []), *(p.get("masks") or []), *(p.get("scribbles") or []),
             *([p.tuned] if p.get("tuned") else [])]
    return {Path(f).resolve() for f in named} | {Path(f).resolve() for f in files}


def _targets(cfg: DictConfig, out_dir: Path) -> tuple[list[Path], list[dict]]:
    """The target files of ``cfg.targets``; none at all, or the output folder given as a target folder, is an
    InputError (the next run would read this run's outputs as targets)."""
    for spec in cfg.targets:
        folder = Path(str(spec)).expanduser()
        if folder.is_dir() and folder.resolve() == out_dir.resolve():
            raise InputError(f"{spec}: is both a target folder and output_dir; choose another output_dir")
    files, failures = expand_targets(cfg.targets)
    if not files:
        why = "; ".join(x["error"] for x in failures) or "targets is empty"
        raise InputError(f"no target images to segment: {why}")
    return files, failures


def _segment_one(f: Path, stem: str, cfg: DictConfig, seg: FewShotSegmenter, out_dir: Path,
                 palette: np.ndarray, guard: OutputGuard) -> dict:
    img = load_image(f, max_side=cfg.max_side)
    orig_hw = _original_size(f, img)
    # a target downscaled on load is decoded at the file's own size (the paint is resized, not the labels)
    pred = seg.predict(img, output_size=orig_hw)
    if orig_hw != img.shape[:2]:  # the overlay is drawn at the file's size too
        img = np.asarray(Image.fromarray(img).resize(orig_hw[::-1], Image.BILINEAR))
    write_outputs(out_dir, stem, img, pred, palette, guard)
    scores = pred.mean_scores()  # once per target, not once per id
    classes = {i: {"area": a, "mean_score": round(scores[i], 4)} for i, a in pred.areas().items()}
    return TargetResult(str(f), orig_hw, classes).to_json()


def _summary(cfg: DictConfig, seg: FewShotSegmenter, prompts: PromptFiles, results: dict, failures: list,
             guard: OutputGuard, seconds: float) -> dict:
    p, kind = cfg.prompt, prompts.kind
    return {
        "model": str(cfg.model.name), "checkpoint": str(cfg.checkpoint or cfg.model.checkpoint),
        "strategy": cfg.strategy.name, "seg_type": str(SegType.parse(seg.seg_type)),
        "prompts": ([{"tuned": str(p.tuned)}] if p.get("tuned") else [])
        + ([{"image": str(i), kind: str(m)} for i, m in zip(p.images, p[kind])] if kind else []),
        "prompt_ids": {str(k): list(v) for k, v in seg.colors.items()},
        "targets": results, "failed": failures, "outputs": guard.owned(),
        "num_ok": len(results), "num_failed": len(failures), "seconds": round(seconds, 2),
    }


def run(cfg: DictConfig) -> int:
    """Run the few-shot job described by ``cfg`` (see ``conf/segment.yaml``); returns the exit code
    (0 = every target segmented, 1 = some target failed; bad prompts/arguments raise InputError)."""
    dist = DistInfo.from_env()
    if str(cfg.get("export") or "none") not in EXPORT_FORMATS:
        raise InputError(f"export={cfg.export}: expected one of {', '.join(EXPORT_FORMATS)}")
    if int(cfg.max_side) < 16:
        raise InputError(f"max_side={cfg.max_side}: expected a side length of at least 16 pixels")
    resolve_refine(cfg.get("refine", "auto"), (1, 1))  # a bad setting fails before any work
    out_dir = ensure_output_dir(Path(cfg.output_dir))
    use_tuned = cfg.strategy.name == "tuned"
    prompts = _read_prompts(cfg, use_tuned)
    files, failures = _targets(cfg, out_dir)
    guard = OutputGuard.for_folder(out_dir, _inputs(cfg, prompts, files), bool(cfg.get("overwrite", False)))
    seg = _segmenter(cfg, prompts, use_tuned)
    palette = id_palette(seg.colors, prompts.palette)
    stems = _output_stems(files)
    mine = list(zip(files, stems))[dist.rank :: dist.world_size]  # shard targets across torchrun ranks
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    for f, stem in tqdm(mine, desc="segment", unit="img", disable=not dist.is_main and dist.world_size > 1):
        try:
            results[stem] = _segment_one(f, stem, cfg, seg, out_dir, palette, guard)
        except InputError as e:
            failures.append({"file": str(f), "error": str(e)})
            log.warning("%s", e)
    if not dist.is_main:  # failures of target specs are reported once, by rank 0
        failures = [x for x in failures if x["file"] in {str(f) for f, _ in mine}]
    summary = _summary(cfg, seg, prompts, results, failures, guard, time.perf_counter() - t0)
    if dist.world_size > 1:
        summary = dist.merge_summaries(out_dir, summary)
        if dist.is_main:  # back to the targets' order (ranks hold interleaved shards)
            summary["targets"] = {s: summary["targets"][s] for s in stems if s in summary["targets"]}
    if dist.is_main:
        summary["outputs"] = sorted(set(summary["outputs"]) | set(_export(cfg, out_dir, summary, guard)))
        guard.check(out_dir / SUMMARY)
        with atomic_path(out_dir / SUMMARY) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2))
        for x in summary["failed"]:
            print(f"failed: {x['error']}")
        print(f"segmented {summary['num_ok']} target(s), {summary['num_failed']} failed -> {out_dir}")
    return 1 if summary["num_failed"] else 0


def _export(cfg: DictConfig, out_dir: Path, summary: dict, guard: OutputGuard) -> list[str]:
    """``export=coco|yolo|png``: the label maps just written, read back and exported beside them
    (:mod:`painter_seg.io.export`; class names from a tuned prompt, else ``class_<id>``). Returns the names."""
    fmt = str(cfg.get("export") or "none")
    if fmt == "none" or not summary["targets"]:
        return []
    items = [ExportItem(Path(t["file"]).name, stem, read_label_png(out_dir / f"{stem}{OUTPUT_SUFFIXES[0]}"))
             for stem, t in summary["targets"].items()]
    names = None
    if cfg.prompt.get("tuned"):
        prompt = TunedPrompt.read(cfg.prompt.tuned)
        names = dict(zip(prompt.class_ids, prompt.class_names))
    files = export_files(fmt, items, names)
    for rel in files:
        guard.check(out_dir / rel)
    write_export(out_dir, files)
    guard.written.update(files)
    return list(files)


def _original_size(path: Path, img: np.ndarray) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees
                w, h = h, w
        return (h, w)
    except Exception:  # noqa: BLE001 - size is only a hint here
        return img.shape[:2]
