"""Semantic-segmentation IoU metrics (numpy only).

* :class:`ConfusionMatrix` accumulates a ``num_classes x num_classes`` confusion matrix over label
  maps (pixels whose ground truth is ``ignore_index``, 255 by default, are skipped) and gives
  per-class IoU, mIoU and FB-IoU.
* :class:`FewShotMeter` follows the few-shot segmentation protocol (FSS-1000 / PASCAL-5i / COCO-20i,
  as in the HSNet evaluation code): every episode is a binary (pred, gt) pair tagged with its class
  name; intersection and union are *summed over the episodes of a class* and the class IoU is their
  ratio; mIoU is the mean of the class IoUs and FB-IoU the mean of the foreground and background
  IoUs, both accumulated over the whole data set.
* :func:`binary_iou` is the IoU of one binary prediction against one ground truth.

All values are fractions in [0, 1] (papers usually print them x100).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

IGNORE_INDEX = 255

__all__ = ["IGNORE_INDEX", "ConfusionMatrix", "FewShotMeter", "binary_iou"]


def _check_pair(
    pred: np.ndarray, gt: np.ndarray, what: str = "pred"
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``pred`` and ``gt`` as arrays; :class:`InputError` when their shapes differ."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise InputError(
            f"{what}: shape {pred.shape} differs from the ground truth shape {gt.shape}"
        )
    return pred, gt


def _binary_counts(
    pred: np.ndarray, gt: np.ndarray, ignore_index: int | None
) -> tuple[int, int, int, int]:
    """Foreground and background intersection/union pixel counts of one binary pair.

    The ground-truth foreground is every value other than 0 and ``ignore_index``; the predicted
    foreground is every non-zero value. Pixels whose ground truth is ``ignore_index`` are skipped.

    Returns:
        ``(fg_intersection, fg_union, bg_intersection, bg_union)``.
    """
    pred, gt = _check_pair(pred, gt)
    valid = np.ones(gt.shape, dtype=bool) if ignore_index is None else gt != ignore_index
    gt_fg = (gt != 0) & valid
    pred_fg = (pred != 0) & valid
    gt_bg = (~gt_fg) & valid
    pred_bg = (~pred_fg) & valid
    fg_i = int(np.count_nonzero(gt_fg & pred_fg))
    fg_u = int(np.count_nonzero(gt_fg | pred_fg))
    bg_i = int(np.count_nonzero(gt_bg & pred_bg))
    bg_u = int(np.count_nonzero(gt_bg | pred_bg))
    return fg_i, fg_u, bg_i, bg_u


def binary_iou(
    pred: np.ndarray, gt: np.ndarray, ignore_index: int | None = IGNORE_INDEX
) -> float:
    """IoU of a binary prediction against a binary ground truth.

    Args:
        pred: predicted mask; every non-zero value (or ``True``) is foreground.
        gt: ground-truth mask; every value other than 0 and ``ignore_index`` is foreground, pixels
            equal to ``ignore_index`` are left out of both the intersection and the union.
        ignore_index: the void label of ``gt`` (``None``: no void pixels).

    Returns:
        ``|pred & gt| / |pred | gt|``; 1.0 when both are empty (as the DAVIS region similarity).
    """
    fg_i, fg_u, _, _ = _binary_counts(pred, gt, ignore_index)
    return 1.0 if fg_u == 0 else fg_i / fg_u


class ConfusionMatrix:
    """Confusion matrix over label maps, with an ignore index.

    Rows are ground-truth classes and columns predicted classes. Class 0 is the background for
    :meth:`fb_iou`.

    Args:
        num_classes: number of classes (labels ``0 .. num_classes - 1``).
        ignore_index: ground-truth label whose pixels are skipped (``None``: none).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> None:
        if int(num_classes) < 2:
            raise InputError(f"num_classes={num_classes}: needs at least 2 classes")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.matrix[:] = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one (prediction, ground truth) pair of integer label maps of the same shape.

        Raises:
            InputError: shapes differ, or a label (other than the ignore index in ``gt``) lies
                outside ``0 .. num_classes - 1``.
        """
        pred, gt = _check_pair(pred, gt)
        gt = gt.astype(np.int64, copy=False).ravel()
        pred = pred.astype(np.int64, copy=False).ravel()
        if self.ignore_index is not None:
            keep = gt != self.ignore_index
            gt, pred = gt[keep], pred[keep]
        n = self.num_classes
        for what, arr in (("gt", gt), ("pred", pred)):
            if arr.size and (arr.min() < 0 or arr.max() >= n):
                bad = int(arr.max()) if arr.max() >= n else int(arr.min())
                raise InputError(f"{what}: label {bad} outside 0..{n - 1} (num_classes={n})")
        self.matrix += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU ``TP / (TP + FP + FN)``; NaN for a class absent from gt and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes seen in gt or prediction (NaN classes are left out)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")

    def fb_iou(self) -> float:
        """Foreground-background IoU: the maps are binarised (class 0 = background, any other
        class = foreground), and the mean of the background IoU and the foreground IoU is returned,
        both accumulated over everything seen so far. An empty side (union 0) is left out."""
        m = self.matrix
        bg_i = m[0, 0]
        bg_u = m[0, :].sum() + m[:, 0].sum() - bg_i
        fg_i = m[1:, 1:].sum()
        fg_u = m.sum() - bg_i
        ious = [i / u for i, u in ((bg_i, bg_u), (fg_i, fg_u)) if u > 0]
        return float(np.mean(ious)) if ious else float("nan")

    def pixel_accuracy(self) -> float:
        """Fraction of non-ignored pixels labelled correctly."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def summary(self) -> dict[str, object]:
        """``{"mIoU", "FB-IoU", "pixel_accuracy", "per_class_iou"}`` (a list, NaN as None)."""
        return {
            "mIoU": self.miou(),
            "FB-IoU": self.fb_iou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class_iou": [None if np.isnan(v) else float(v) for v in self.iou()],
        }


class FewShotMeter:
    """Few-shot segmentation evaluation, accumulated per class name.

    Each :meth:`update` is one episode: a binary prediction for one query image of class
    ``class_name`` (foreground = non-zero) and its ground truth (foreground = 1, or any value other
    than 0 and ``ignore_index``; ``ignore_index`` pixels are skipped).

    * class IoU = (sum of the foreground intersections of the class's episodes) / (sum of their
      unions); as in the HSNet/FSS evaluation code a class whose summed union is 0 scores 0;
    * mIoU = mean of the class IoUs over the classes seen;
    * FB-IoU = mean of foreground IoU and background IoU, each summed over all episodes of all
      classes.

    Args:
        ignore_index: void label of the ground truth (``None``: none).
    """

    def __init__(self, ignore_index: int | None = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index
        self._counts: dict[str, np.ndarray] = {}  # name -> [fg_i, fg_u, bg_i, bg_u]
        self._episodes: dict[str, int] = {}

    def reset(self) -> None:
        """Forget every episode."""
        self._counts.clear()
        self._episodes.clear()

    def update(self, class_name: str, pred: np.ndarray, gt: np.ndarray) -> float:
        """Add one episode and return its own foreground IoU (1.0 when both masks are empty)."""
        counts = np.asarray(_binary_counts(pred, gt, self.ignore_index), dtype=np.int64)
        name = str(class_name)
        if name not in self._counts:
            self._counts[name] = np.zeros(4, dtype=np.int64)
            self._episodes[name] = 0
        self._counts[name] += counts
        self._episodes[name] += 1
        return 1.0 if counts[1] == 0 else float(counts[0] / counts[1])

    @property
    def num_episodes(self) -> int:
        """Number of episodes seen so far."""
        return int(sum(self._episodes.values()))

    def class_iou(self) -> dict[str, float]:
        """Foreground IoU of every class seen (intersection and union summed over its episodes)."""
        return {n: float(c[0] / max(int(c[1]), 1)) for n, c in sorted(self._counts.items())}

    def miou(self) -> float:
        """Mean of the class IoUs (NaN before any episode)."""
        ious = list(self.class_iou().values())
        return float(np.mean(ious)) if ious else float("nan")

    def fb_iou(self) -> float:
        """Mean of the foreground and background IoUs summed over all episodes (NaN before any)."""
        if not self._counts:
            return float("nan")
        total = np.sum(list(self._counts.values()), axis=0)
        fg = total[0] / max(int(total[1]), 1)
        bg = total[2] / max(int(total[3]), 1)
        return float((fg + bg) / 2)

    def summary(self) -> dict[str, object]:
        """``{"mIoU", "FB-IoU", "episodes", "per_class_iou", "per_class_episodes"}`` (the per-class
        entries map class name -> IoU / episode count)."""
        return {
            "mIoU": self.miou(),
            "FB-IoU": self.fb_iou(),
            "episodes": self.num_episodes,
            "per_class_iou": self.class_iou(),
            "per_class_episodes": dict(sorted(self._episodes.items())),
        }
