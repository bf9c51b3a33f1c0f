"""The data of prompt tuning: labelled images of one scene, their split, and held-out scoring.

A scene comes from files (:func:`load_scene`):

* ``images=<dir>`` with ``masks=<dir>``: images and masks matched by file stem (``X.jpg`` with
  ``X.png``, ``X_mask.png``...). Mask ids are the classes (0 = background, ``ignore_index`` = no
  class): a multi-class scene has one id map per image, and the tuned prompt predicts the same ids.
* ``images=<dir>`` alone: a folder in a layout of
  :func:`painter_seg.data.folders.load_few_shot_folder` (an FSS-1000 class folder or root, a
  PerSeg root, flat ``cat_00.jpg`` + ``cat_00.png`` pairs, ``images/`` + ``masks/``). Each class
  (object) becomes one class of the prompt, ids 1..C in the order of ``classes`` (masks are
  binarised); a folder with several classes needs ``classes``.

or is generated (:func:`synthetic_scene`: views of one fixed generated scene).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..codec.canvas import resize_labels
from ..codec.seg_type import SegType
from ..data.folders import load_few_shot_folder, pair_folders
from ..errors import InputError
from ..evaluation.miou import FewShotMeter
from ..io.images import load_image
from ..io.masks import load_mask

LabeledImage = tuple[np.ndarray, np.ndarray]  # (uint8 [H, W, 3] RGB, int [H, W] ids)


@dataclass
class Scene:
    """Labelled images of one scene.

    Attributes:
        pairs: ``(uint8 [H, W, 3] RGB, int64 [H, W] ids)`` per image.
        files: the image file (or view name) of each pair.
        source: where the scene came from, in words.
        class_ids: the classes, in palette order (None = every id found in the masks).
        class_names: one name per class id (None = ``class_<id>``).
        seg_type: of the scene's masks.
    """

    pairs: list[LabeledImage]
    files: list[str]
    source: str
    class_ids: list[int] | None = None
    class_names: list[str] | None = None
    seg_type: SegType = SegType.SEMANTIC


def split_pairs(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, held_out)`` of a seeded random split of n items: ``round(fraction * n)``
    held out, at least one on each side when ``fraction > 0`` and n >= 2; ``fraction = 0`` holds
    out nothing."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    if fraction <= 0 or n < 2:
        return sorted(order), []
    k = min(n - 1, max(1, round(fraction * n)))
    return sorted(order[k:]), sorted(order[:k])


def score_labels(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], ids: Sequence[int],
                 ignore_index: int | None = 255) -> dict[str, Any]:
    """mIoU of predicted label maps against the true ones, over the class ``ids`` of a prompt.

    Every class id is scored on every image as a binary (pred == id, gt == id) pair (so false
    positives on images without the class count); intersections and unions are summed per class
    over the images (:class:`~painter_seg.evaluation.miou.FewShotMeter`) and mIoU is the mean over
    the classes. ``ignore_index`` pixels of ``gt`` are not scored.

    Returns:
        ``{"mIoU": float, "per_class": {id: IoU}, "images": n}``.
    """
    meter = FewShotMeter(ignore_index=ignore_index)
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} label maps")
    for pred, gt in zip(preds, gts, strict=True):
        gt = np.asarray(gt)
        for j in (int(i) for i in ids):
            g = gt == j if ignore_index is None else np.where(gt == ignore_index, ignore_index,
                                                               gt == j)
            meter.update(str(j), (pred == j).astype(np.int64), g.astype(np.int64))
    per_class = {int(k): v for k, v in meter.class_iou().items()}
    return {"mIoU": meter.miou(), "per_class": per_class, "images": len(gts)}


class _Predictor(Protocol):  # what score_pairs needs of a predictor (FewShotSegmenter)
    ids: Any
    is_prompt_set: bool

    def predict_batch(self, images: Sequence) -> list: ...


def score_pairs(segmenter: _Predictor, pairs: Sequence[LabeledImage],
                ignore_index: int | None = 255) -> dict[str, Any]:
    """:func:`score_labels` of a prompted predictor (e.g.
    :class:`~painter_seg.apps.few_shot.FewShotSegmenter`) over labelled images, predicted at the
    images' own size, for every id of its prompt."""
    if not segmenter.is_prompt_set:
        raise RuntimeError("score_pairs: the segmenter has no prompt")
    preds = [p.labels for p in segmenter.predict_batch([p[0] for p in pairs])]
    return score_labels(preds, [p[1] for p in pairs], segmenter.ids, ignore_index)


def _read_pair(img_path: Path, mask_path: Path, binary_id: int | None, ignore_index: int | None,
               max_side: int | None, resize_masks: bool) -> LabeledImage:
    img = load_image(img_path, max_side=max_side)
    lab = load_mask(mask_path).labels
    if lab.shape != img.shape[:2]:
        if not resize_masks:
            raise InputError(f"{mask_path}: mask is {lab.shape[1]}x{lab.shape[0]} but its image is "
                             f"{img.shape[1]}x{img.shape[0]} (set resize_masks=true to resize it)")
        lab = resize_labels(lab, img.shape[:2])
    if binary_id is not None:  # one class per folder: any id is the object, the ignore id stays
        fg = (lab > 0) & (lab != ignore_index)
        lab = (np.where(lab == ignore_index, ignore_index, fg * binary_id) if fg.any()
               else (lab > 0) * binary_id)
    return img, lab.astype(np.int64)


def load_scene(images: str | Path | None, masks: str | Path | None = None, *, layout: str = "auto",
               classes: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
               seg_type: SegType | str | int = "semantic", ignore_index: int | None = 255,
               max_side: int | None = 4096, resize_masks: bool = False) -> Scene:
    """The labelled images of a folder (module docstring); arguments as in
    ``conf/tune_prompt.yaml``.

    Raises:
        InputError: no or unreadable folders, mismatched masks, unknown or unnamed classes.
    """
    seg = SegType.parse(seg_type)
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
                                     or not 1 <= ignore_index <= 65535):
        raise InputError(f"ignore_index={ignore_index}: expected a mask id 1-65535 (or null: none)")
    if max_side is not None and not (isinstance(max_side, int) and max_side >= 0):
        raise InputError(f"max_side={max_side}: expected a side in pixels >= 1 (0 or null: no limit)")
    if not images:
        raise InputError("give images=<folder> (with masks=<folder>), or a FSS-1000 / PerSeg / "
                         "flat-pairs folder")
    root = Path(str(images))
    read = {"ignore_index": ignore_index, "max_side": max_side, "resize_masks": resize_masks}
    if masks and Path(str(masks)).resolve() != root.resolve():
        found = pair_folders(root, Path(str(masks)))
        scene = Scene([_read_pair(i, m, None, **read) for i, m in found],
                      [str(i) for i, _ in found], str(root), seg_type=seg)
        if class_names:
            ids = sorted({int(i) for _, lab in scene.pairs for i in np.unique(lab)
                          if i not in (0, ignore_index)})
            if len(class_names) != len(ids):
                raise InputError(f"class_names has {len(class_names)} names but the masks hold "
                                 f"{len(ids)} class ids {ids}")
            scene.class_ids, scene.class_names = ids, [str(n) for n in class_names]
        return scene
    data = load_few_shot_folder(root, str(layout))
    chosen = [str(c) for c in classes] if classes else list(data)
    unknown = [c for c in chosen if c not in data]
    if unknown:
        raise InputError(f"classes: {unknown} not found in {root} (it holds {', '.join(data)})")
    if len(chosen) > 1 and not classes:
        raise InputError(f"{root} holds {len(chosen)} classes ({', '.join(chosen[:8])}"
                         f"{', ...' if len(chosen) > 8 else ''}): pick the ones to tune for with "
                         "classes=[...]")
    pairs, files = [], []
    for k, name in enumerate(chosen, 1):
        for img_path, mask_path in data[name]:
            pairs.append(_read_pair(img_path, mask_path, k, **read))
            files.append(str(img_path))
    return Scene(pairs, files, str(root), list(range(1, len(chosen) + 1)), chosen, seg)


def synthetic_scene(seed: int, views: int, size: Sequence[int], num_classes: int) -> Scene:
    """``views`` generated views ``(h, w) = size`` of one fixed scene with ``num_classes`` classes
    (:func:`painter_seg.data.synthetic.generate_scene_views`), named ``view_00``..."""
    from ..data.synthetic import generate_scene_views

    c = int(num_classes)
    pairs = generate_scene_views(int(seed), int(views), tuple(int(s) for s in size), c)
    return Scene(pairs, [f"view_{i:02d}" for i in range(len(pairs))],
                 f"generated fixed scene (seed {seed}, {len(pairs)} views, {c} classes)",
                 list(range(1, c + 1)), [f"class_{i}" for i in range(1, c + 1)])
