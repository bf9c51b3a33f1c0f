"""The propagation job (``painter-seg propagate``, ``tools/propagate.py``): one video, or many DAVIS sequences
sharded by rank. Reads the config, frames and masks; writes palette PNGs, ``overlay.mp4`` and ``summary.json``."""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from ..apps.video import VideoPropagator, VideoSettings, object_colors
from ..build import build_model
from ..codec import SegType, resize_labels
from ..errors import InputError
from ..io.files import atomic_path, ensure_output_dir, is_inside, same_file
from ..io.images import overlay
from ..io.masks import LoadedMask, load_mask, read_label_png, save_label_png
from ..io.video import FrameSource, Mp4Writer
from ..model import SegGPT
from ..utils.dist import DistInfo
from ..utils.runtime import resolve_device, resolve_precision

log = logging.getLogger(__name__)


class _WrittenFrames(Mapping):
    """Frame index -> labels of the PNGs an earlier run wrote, read only when asked for (one at a time), so a
    resumed long video does not hold all its earlier masks in memory."""

    def __init__(self, paths: dict[int, Path]) -> None:
        self.paths = paths

    def __getitem__(self, idx: int) -> np.ndarray:
        return read_label_png(self.paths[idx])

    def __contains__(self, idx: object) -> bool:  # Mapping's default would read the file to answer
        return idx in self.paths

    def __iter__(self) -> Iterator[int]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def _warn(msg: str) -> None:
    """A one-line warning on stderr (errors go there too, as ``error: ...``)."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _later_masks(prop: VideoPropagator, state, frames: FrameSource, masks_dir: Path, warnings: list[str]
                 ) -> None:
    """Annotate the frames named by the PNGs in ``masks_dir`` (after frame 0; objects may be new). A mask one
    or two pixels off the frame size (as DAVIS-2017 judo/00005.png) is resized nearest, with a warning."""
    index = {n: i for i, n in enumerate(frames.names)}
    for path in sorted(masks_dir.glob("*.png")):
        idx = index.get(path.stem)
        if idx is None:
            raise InputError(f"{path}: no frame named {path.stem} in the video")
        if idx == 0:
            continue
        labels = load_mask(path).labels
        if labels.shape != tuple(frames.size):
            if max(abs(a - b) for a, b in zip(labels.shape, frames.size)) > 2:
                raise InputError(f"{path}: mask is {labels.shape[1]}x{labels.shape[0]} but the frames are "
                                 f"{frames.size[1]}x{frames.size[0]}")
            warnings.append(f"{path}: mask is {labels.shape[1]}x{labels.shape[0]}, frames "
                            f"{frames.size[1]}x{frames.size[0]}; resized (nearest)")
            _warn(warnings[-1])
            labels = resize_labels(labels, frames.size)
        prop.add_mask(state, idx, labels)


def _check_masks_dir(masks_dir: Path, out_dir: Path) -> None:
    if not masks_dir.exists():
        raise InputError(f"masks={masks_dir}: folder not found")
    if not masks_dir.is_dir():
        raise InputError(f"masks={masks_dir}: not a folder (a folder of PNGs named after their frames)")
    if is_inside(out_dir, masks_dir):
        raise InputError(f"{out_dir}: output dir is inside the input masks folder {masks_dir}")


def _open_inputs(video: Path, first_mask: Path, out_dir: Path, masks_dir: Path | None, overwrite: bool
                 ) -> tuple[FrameSource, LoadedMask, list[str]]:
    """The frames, the first mask (checked against them) and the warnings so far; nothing written yet."""
    if video.is_dir() and is_inside(out_dir, video):
        raise InputError(f"{out_dir}: output dir is inside the input video folder {video}")
    if masks_dir is not None:
        _check_masks_dir(masks_dir, out_dir)
    frames = FrameSource(video)
    warnings = []
    if frames.missing:
        gap = frames.missing if len(frames.missing) <= 3 else frames.missing[:3] + ["..."]
        warnings.append(f"{video}: {len(frames.missing)} frame(s) missing from the numbering ({', '.join(gap)}); "
                        "propagating over the gap")
        _warn(warnings[-1])
    mask = load_mask(first_mask)
    if mask.labels.shape != frames.size:
        raise InputError(f"{first_mask}: mask is {mask.labels.shape[1]}x{mask.labels.shape[0]} but the "
                         f"frames of {video} are {frames.size[1]}x{frames.size[0]}")
    if mask.labels.max() > 255:
        raise InputError(f"{first_mask}: object ids above 255 (max {mask.labels.max()})")
    if not mask.labels.any():
        raise InputError(f"{first_mask}: first mask has no objects (all background)")
    if overwrite and same_file(out_dir / f"{frames.names[0]}.png", first_mask):
        raise InputError(f"{out_dir}: overwrite=true would overwrite the first mask {first_mask}")
    return frames, mask, warnings


def _palette(object_ids, mask: LoadedMask) -> np.ndarray:
    """One colour per object; the user's palette colours and ids kept (DAVIS convention)."""
    palette = object_colors(object_ids)
    if mask.palette is not None:
        palette[: len(mask.palette)] = np.where(mask.palette.any(axis=1, keepdims=True), mask.palette,
                                                palette[: len(mask.palette)])
    return palette


def _written_before(frames: FrameSource, out_dir: Path, mask: LoadedMask, first_mask: Path, overwrite: bool
                    ) -> dict[int, Path]:
    """Frame index -> PNG an earlier run wrote (resume); empty with ``overwrite``. An output dir holding
    another first-frame mask is refused."""
    if overwrite:
        return {}
    written = {i: out_dir / f"{n}.png" for i, n in enumerate(frames.names) if (out_dir / f"{n}.png").is_file()}
    if 0 in written and not np.array_equal(read_label_png(written[0]), mask.labels):
        raise InputError(f"{written[0]}: holds another first-frame mask than {first_mask}; "
                         "pass overwrite=true or another output_dir")
    return written


def _write_masks(prop: VideoPropagator, state, frames: FrameSource, out_dir: Path, palette: np.ndarray,
                 written_before: dict[int, Path], writer: Mp4Writer | None, desc: str, show_progress: bool
                 ) -> tuple[int, dict]:
    """Propagate; write each new frame's PNG (and overlay frame). Returns (PNGs written, object areas)."""
    known = _WrittenFrames({i: p for i, p in written_before.items() if i > 0})
    written, areas = 0, {}
    for idx, labels in tqdm(prop.propagate(state, known=known), total=len(frames), desc=desc, unit="frame",
                            disable=not show_progress):
        name = frames.names[idx]
        if idx not in written_before:
            save_label_png(out_dir / f"{name}.png", labels, palette)
            written += 1
        areas[name] = {str(i): int((labels == i).sum()) for i in state.object_ids}
        if writer is not None:
            writer.write(overlay(state.frames.last_frame, labels, palette))  # the frame just read
    return written, areas


def propagate_video(prop: VideoPropagator, video: Path, first_mask: Path, out_dir: Path,
                    overwrite: bool = False, write_overlay: bool = True, show_progress: bool = True,
                    masks_dir: Path | None = None) -> dict:
    """Propagate ``first_mask`` (annotating frame 0) through ``video``; write one palette PNG per frame (named
    after the frame), ``overlay.mp4`` and ``summary.json`` in ``out_dir``. Frames whose PNG already exists are
    neither predicted nor written again (resume; they are read back for the context) unless ``overwrite``.
    Nothing is ever written into the input folder. ``masks_dir``: later annotations (PNGs named after their
    frames), e.g. objects that appear after frame 0.

    Raises:
        InputError: unusable video, frames or mask, or an output dir inside the input folder or holding the
            masks of another first mask (one-line message naming the file).
    """
    masks_dir = Path(masks_dir) if masks_dir is not None else None
    frames, mask, warnings = _open_inputs(video, first_mask, out_dir, masks_dir, overwrite)
    out_dir = ensure_output_dir(out_dir)
    state = prop.init(frames)
    prop.add_mask(state, 0, mask.labels)
    if masks_dir is not None:
        _later_masks(prop, state, frames, masks_dir, warnings)
    palette = _palette(state.object_ids, mask)
    written_before = _written_before(frames, out_dir, mask, first_mask, overwrite)
    writer = Mp4Writer(out_dir / "overlay.mp4", frames.fps, frames.size) if write_overlay else None
    t0, ok = time.perf_counter(), False
    try:
        written, areas = _write_masks(prop, state, frames, out_dir, palette, written_before, writer, video.name,
                                      show_progress)
        ok = True
    finally:
        if writer is not None:
            writer.close(keep=ok)
    secs = time.perf_counter() - t0
    summary = {
        "video": str(video), "first_mask": str(first_mask), "frames": len(frames), "written": written,
        "resumed": len(written_before), "objects": [int(i) for i in state.object_ids],
        "context_frames": prop.context_frames, "settings": dataclasses.asdict(prop.settings),
        "seconds": round(secs, 2), "warnings": warnings,
        "fps": round(max(written, 1) / secs, 3) if secs > 0 else None,
        "object_area_per_frame": areas,
    }
    with atomic_path(out_dir / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1))
    return summary


def build_propagator(cfg: DictConfig, model: SegGPT) -> VideoPropagator:
    """The propagator of a propagate/evaluate config: the model config's ``video:`` block (its defaults),
    with the entry config's ``context_frames`` when not null."""
    ctx = cfg.context_frames
    if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int)):
        raise InputError(f"context_frames={ctx!r}: expected an integer >= 0 (or null: the model's)")
    resolve_precision(str(cfg.precision), next(model.parameters()).device)  # a bad value fails before the frames
    settings = VideoSettings.from_config(cfg.model.get("video"), context_frames=ctx)
    return VideoPropagator(model, settings, seg_type=SegType.parse(cfg.seg_type), precision=cfg.precision)


def _check_paths(cfg: DictConfig) -> None:
    """The input paths of a propagate config exist, checked before a model is built (a ViT-L checkpoint takes a
    minute to load); their contents are checked by :func:`propagate_video`."""
    if (cfg.get("data") or {}).get("source") == "davis":
        if not Path(str(cfg.root)).is_dir():
            raise InputError(f"root={cfg.root}: data set folder not found")
        return
    if not cfg.video or not cfg.first_mask:
        raise InputError("give video=<folder of frames | .mp4> and first_mask=<png>")
    if not Path(str(cfg.video)).exists():
        raise InputError(f"{cfg.video}: video not found")
    first = Path(str(cfg.first_mask))
    if first.is_dir():
        raise InputError(f"{first}: is a folder, not an image file")
    if not first.is_file():
        raise InputError(f"{first}: file not found")


def run(cfg: DictConfig) -> int:
    """Run ``conf/propagate.yaml``: one video (``video``, ``first_mask``) or a DAVIS root (``data=davis``)."""
    _check_paths(cfg)
    dist = DistInfo.from_env()
    device = resolve_device(cfg.device)
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=device)
    prop = build_propagator(cfg, model)
    out_root = Path(cfg.output_dir)
    if (cfg.get("data") or {}).get("source") == "davis":
        from ..data.folders import davis_sequence, list_davis_sequences

        root = Path(cfg.root)
        if is_inside(out_root, root):
            raise InputError(f"{out_root}: output dir is inside the input data set {root}")
        found = list_davis_sequences(root)  # the root's layout is checked once, named sequences or not
        seqs = list(cfg.sequences) if cfg.sequences else found
        failures = []
        for seq in seqs[dist.rank :: dist.world_size]:
            try:
                frame_paths, ann_paths = davis_sequence(root, seq)
                propagate_video(prop, frame_paths[0].parent, ann_paths[0], out_root / seq,
                                overwrite=cfg.overwrite, write_overlay=cfg.write_overlay)
            except InputError as e:
                failures.append(str(e))
                log.warning("%s", e)
        for f in failures:
            print(f"failed: {f}")
        return 1 if failures else 0
    s = propagate_video(prop, Path(cfg.video), Path(cfg.first_mask), out_root, overwrite=cfg.overwrite,
                        write_overlay=cfg.write_overlay, masks_dir=Path(cfg.masks) if cfg.masks else None)
    print(f"{s['frames']} frames ({s['written']} written, {s['resumed']} resumed), objects {s['objects']}, "
          f"{s['fps']} frames/s -> {out_root}")
    return 0
