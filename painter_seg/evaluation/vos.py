"""Evaluate video object segmentation results on disk (DAVIS 2017 semi-supervised protocol).

``evaluate_vos(pred, gt, output_dir)`` reads index PNGs (palette PNGs as written by DAVIS and by
``painter_seg``'s propagation), scores them with :mod:`painter_seg.evaluation.jf` and writes
``per_sequence.csv`` and ``summary.json`` into ``output_dir``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..io.files import atomic_path, is_inside
from ..io.masks import davis_palette
from .jf import BOUND_TH, SUMMARY_KEYS, ObjectResult, evaluate_sequence, summarize

PathLike = str | os.PathLike

CSV_COLUMNS: tuple[str, ...] = ("sequence", "object") + SUMMARY_KEYS + ("frames",)

__all__ = ["CSV_COLUMNS", "evaluate_vos", "id_consistency", "read_index_mask"]


def _grey_to_index(grey: np.ndarray) -> np.ndarray:
    """Interpret a single-channel mask as an index map.

    * only 0 and 255: a binary mask (DAVIS 2016 style), 255 -> object 1;
    * every value other than 255 below 128: an index map (255 stays void);
    * anything else (grey levels, anti-aliased edges): threshold at 128 -> object 1.
    """
    values = np.unique(grey)
    if np.all(np.isin(values, (0, 255))):
        return (grey > 127).astype(np.uint8)
    rest = values[values != 255]
    if np.issubdtype(grey.dtype, np.integer) and rest.size and rest.max() < 128 and rest.min() >= 0:
        return grey.astype(np.uint8)
    return (grey > 127).astype(np.uint8)


def read_index_mask(path: PathLike) -> np.ndarray:
    """Read a mask PNG as an ``(H, W)`` uint8 index map (0 = background, 255 = void).

    * palette ('P') PNGs: the palette indices;
    * grey ('L', 'I', 'LA', '1') masks: a binary 0/255 mask (-> object 1), an index map (values
      below 128, 255 = void), or a soft mask (threshold 128 -> object 1);
    * RGB(A) masks: grey when the three channels are equal, otherwise colours of the DAVIS palette
      are mapped back to their indices.

    Raises:
        InputError: unreadable file, unsupported mode, or an RGB colour outside the DAVIS palette.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except FileNotFoundError:
        raise InputError(f"{path}: mask not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        msg = " ".join(str(exc).split())
        raise InputError(f"{path}: cannot read mask ({type(exc).__name__}: {msg})") from None
    if mode in ("P", "PA"):
        return (arr if arr.ndim == 2 else arr[..., 0]).astype(np.uint8)
    if mode == "1":
        return arr.astype(np.uint8)
    if mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        return _grey_to_index(arr if arr.ndim == 2 else arr[..., 0])
    if mode in ("RGB", "RGBA"):
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return _grey_to_index(rgb[..., 0])
        rgb64 = rgb.astype(np.int64)
        code = (rgb64[..., 0] << 16) | (rgb64[..., 1] << 8) | rgb64[..., 2]
        pal = davis_palette().astype(np.int64)
        pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
        lut = {int(c): i for i, c in enumerate(pal_code)}
        colours, inverse = np.unique(code.ravel(), return_inverse=True)
        index = np.empty(colours.size, dtype=np.uint8)
        for j, c in enumerate(colours):
            if int(c) not in lut:
                rgb_c = (int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255)
                raise InputError(
                    f"{path}: colour {rgb_c} is not a DAVIS palette colour; "
                    "save index (palette) PNGs"
                )
            index[j] = lut[int(c)]
        return index[inverse].reshape(code.shape)
    raise InputError(f"{path}: unsupported mask image mode {mode!r}")


def _pngs(folder: Path) -> list[Path]:
    """PNG files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def _sequences(root: Path, role: str) -> tuple[dict[str, Path], bool]:
    """Sequence folders under ``root``: ``({name: folder}, single)``; ``single`` when ``root``
    itself holds the PNGs of one sequence."""
    if not root.is_dir():
        raise InputError(f"{root}: {role} folder not found")
    if _pngs(root):
        return {root.name: root}, True
    seqs = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and _pngs(d)}
    if not seqs:
        raise InputError(
            f"{root}: no PNG masks, nor sequence folders of PNG masks, in this {role} folder"
        )
    return seqs, False


def _pair_sequences(pred: Path, gt: Path, only: Sequence[str] | None = None
                    ) -> list[tuple[str, Path, Path]]:
    """Match ground-truth sequences (those named in ``only``, when given) with prediction folders:
    ``[(name, pred_dir, gt_dir)]``."""
    gt_seqs, gt_single = _sequences(gt, "ground-truth")
    if only is not None and not gt_single:
        missing = [n for n in only if n not in gt_seqs]
        if missing:
            raise InputError(f"{gt}: no ground-truth sequence {missing[0]!r}")
        gt_seqs = {n: gt_seqs[n] for n in only}
    pred_seqs, pred_single = _sequences(pred, "prediction")
    if pred_single:
        if gt_single:
            name = next(iter(gt_seqs))
            return [(name, pred, gt_seqs[name])]
        if pred.name not in gt_seqs:
            raise InputError(
                f"{pred}: single prediction sequence {pred.name!r} has no ground-truth "
                f"sequence in {gt}"
            )
        return [(pred.name, pred, gt_seqs[pred.name])]
    pairs = []
    for name, gt_dir in gt_seqs.items():
        if name not in pred_seqs:
            raise InputError(f"{pred / name}: predicted sequence missing (ground truth {gt_dir})")
        pairs.append((name, pred_seqs[name], gt_dir))
    return pairs


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8, newlines as given)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def _fmt(value: float) -> str:
    """CSV number: 6 decimals, ``nan`` for NaN."""
    return "nan" if math.isnan(value) else f"{value:.6f}"


def _evaluate_one(
    name: str, pred_dir: Path, gt_dir: Path, bound_th: float, ignore_extra_ids: bool
) -> list[ObjectResult]:
    """Read one sequence's masks and score it."""
    gt_paths = _pngs(gt_dir)
    if len(gt_paths) < 3:
        raise InputError(
            f"{gt_dir}: needs at least 3 annotated frames (the first and last are not scored), "
            f"found {len(gt_paths)}"
        )
    scored = gt_paths[1:-1]
    for g in scored:  # fail fast, before reading anything
        if not (pred_dir / g.name).is_file():
            raise InputError(f"{pred_dir / g.name}: predicted frame missing (ground truth {g})")
    gt_frames = [read_index_mask(g) for g in gt_paths]
    pred_frames: list[np.ndarray | None] = [None] * len(gt_paths)
    for t, g in enumerate(scored, start=1):
        p = pred_dir / g.name
        pred_frames[t] = read_index_mask(p)
        if pred_frames[t].shape != gt_frames[t].shape:
            ph, pw = pred_frames[t].shape
            gh, gw = gt_frames[t].shape
            raise InputError(f"{p}: size {pw}x{ph} differs from the ground truth {g} ({gw}x{gh})")
    names = [str(pred_dir / g.name) for g in gt_paths]
    results = evaluate_sequence(
        gt_frames, pred_frames, sequence=name, frame_names=names, bound_th=bound_th,
        ignore_extra_ids=ignore_extra_ids,
    )
    for res in results:
        res.frames = [g.stem for g in scored]
    return results


def _check_output_dir(output_dir: Path, pred: Path, gt: Path) -> None:
    """Raise when ``output_dir`` lies inside the (existing) prediction or ground-truth folder."""
    for folder, role in ((pred, "prediction"), (gt, "ground-truth")):
        if folder.is_dir() and is_inside(output_dir, folder):
            raise InputError(f"{output_dir}: output folder lies inside the {role} folder {folder}")


def _score_pairs(
    pairs: Sequence[tuple[str, Path, Path]], bound_th: float, ignore_extra_ids: bool
) -> list[tuple[str, list[ObjectResult]]]:
    """Score every ``(name, pred_dir, gt_dir)`` pair in order: ``[(name, objects)]``."""
    per_seq: list[tuple[str, list[ObjectResult]]] = []
    for name, pred_dir, gt_dir in pairs:
        per_seq.append((name, _evaluate_one(name, pred_dir, gt_dir, bound_th, ignore_extra_ids)))
    return per_seq


def _csv_text(per_seq: Sequence[tuple[str, list[ObjectResult]]]) -> str:
    """``per_sequence.csv``: the header, one row per object, and a ``mean`` row per sequence
    with objects."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for name, objs in per_seq:
        stats = [o.stats() for o in objs]
        for o, s in zip(objs, stats):
            values = [_fmt(s[k]) for k in SUMMARY_KEYS]
            writer.writerow([name, o.object_id] + values + [len(o.frames)])
        if stats:
            means = summarize(objs)
            writer.writerow([name, "mean"] + [_fmt(means[k]) for k in SUMMARY_KEYS]
                            + [len(objs[0].frames)])
    return buf.getvalue()


def _summary(objects: Sequence[ObjectResult], num_sequences: int) -> dict[str, object]:
    """The official summary keys over all ``objects``, plus ``num_sequences`` and
    ``num_objects``."""
    summary: dict[str, object] = dict(summarize(objects))
    summary["num_sequences"] = num_sequences
    summary["num_objects"] = len(objects)
    return summary


def _write_reports(output_dir: Path, csv_text: str, summary: dict[str, object]) -> None:
    """Create ``output_dir`` and write ``per_sequence.csv`` and ``summary.json`` (NaN as null)
    atomically."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{output_dir}: cannot create output folder ({exc.strerror})") from None
    _write_text(output_dir / "per_sequence.csv", csv_text)
    text = json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                       for k, v in summary.items()}, indent=2)
    _write_text(output_dir / "summary.json", text + "\n")


def evaluate_vos(
    pred: PathLike,
    gt: PathLike,
    output_dir: PathLike,
    *,
    bound_th: float = BOUND_TH,
    ignore_extra_ids: bool = False,
    sequences: Sequence[str] | None = None,
) -> dict[str, object]:
    """Score predicted VOS masks against ground truth and write the reports.

    Args:
        pred: predictions: a folder of sequence folders of PNGs, or one sequence folder of PNGs.
        gt: ground truth in the same form (e.g. DAVIS ``Annotations/480p``); frames are matched by
            file name; every ground-truth sequence needs a prediction folder, and every scored
            ground-truth frame (all but the first and the last) a predicted PNG of the same name
            and size.
        output_dir: where ``per_sequence.csv`` (one row per sequence and object, plus a ``mean``
            row per sequence) and ``summary.json`` (the official DAVIS keys, plus
            ``num_sequences`` and ``num_objects``) are written, atomically; created if needed, must
            not lie inside ``pred`` or ``gt``.
        bound_th: boundary tolerance of F (fraction of the image diagonal).
        ignore_extra_ids: drop predicted ids that the first ground-truth frame does not have,
            instead of raising (the official tool aborts).
        sequences: score only these ground-truth sequences (default all).

    Returns:
        the summary written to ``summary.json``.

    Raises:
        InputError: missing folders, sequences or frames, size mismatches, unreadable masks, or no
            object to score.
    """
    pred, gt, output_dir = Path(pred), Path(gt), Path(output_dir)
    _check_output_dir(output_dir, pred, gt)
    per_seq = _score_pairs(_pair_sequences(pred, gt, sequences), bound_th, ignore_extra_ids)
    objects = [o for _, objs in per_seq for o in objs]
    if not objects:
        raise InputError(f"{gt}: the first ground-truth frame of every sequence holds no object")
    csv_text = _csv_text(per_seq)
    summary = _summary(objects, len(per_seq))
    _write_reports(output_dir, csv_text, summary)
    return summary


def id_consistency(gt_frames: Sequence[np.ndarray], pred_frames: Sequence[np.ndarray],
                   min_pixels: int = 20, swap_share: float = 0.2) -> dict[str, object]:
    """Id safety of a multi-object propagation, frame by frame (all frames but the first are scored).

    Args:
        gt_frames: ``[H, W]`` ground-truth id maps.
        pred_frames: predicted id maps, same sizes.
        min_pixels: an object is visible in a frame when it has at least this many ground-truth pixels.
        swap_share: a swap is a frame where id i covers more than this share of object j's pixels (i != j).

    Returns:
        ``swaps`` (count of (frame, i, j) swaps), ``presence`` (per object: share of its visible frames in
        which its id overlaps it), ``min_presence``, ``returns`` (per object that left and came back:
        whether its id overlaps it on some frame after it returned; absent objects are not listed).
    """
    ids = sorted(int(i) for i in np.unique(gt_frames[0]) if 0 < i < 255)
    swaps, visible, present = 0, dict.fromkeys(ids, 0), dict.fromkeys(ids, 0)
    gone, back_ok = set(), {}
    for gt, pred in zip(gt_frames[1:], pred_frames[1:]):
        for j in ids:
            obj = gt == j
            n = int(obj.sum())
            if n < min_pixels:
                gone.add(j)
                continue
            visible[j] += 1
            hit = bool((pred[obj] == j).any())
            present[j] += hit
            if j in gone:
                back_ok[j] = back_ok.get(j, False) or hit
            others = np.bincount(pred[obj].astype(np.int64), minlength=256)
            swaps += sum(1 for i in ids if i != j and others[i] > swap_share * n)
    presence = {j: present[j] / visible[j] if visible[j] else 1.0 for j in ids}
    return {"swaps": swaps, "presence": presence, "min_presence": min(presence.values(), default=1.0),
            "returns": back_ok}
