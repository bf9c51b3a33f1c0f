"""DAVIS 2017 semi-supervised video object segmentation metrics: region similarity J and boundary F.

This follows the protocol of the official ``davis2017-evaluation`` package
(``davis2017/metrics.py``, ``davis2017/evaluation.py``, ``davis2017/davis.py``,
``davis2017/results.py``, ``davis2017/utils.py``), re-implemented here with numpy and OpenCV:

* objects: ids ``1 .. max(first ground-truth frame)`` (void 255 set to 0 first); ids appearing only
  in later ground-truth frames are not scored, and a prediction holding an id above that count is
  an error (the official tool aborts); an object missing from a predicted frame counts as an empty
  mask;
* the first and the last annotated frames are not scored;
* void: ground-truth pixels equal to 255 are removed from both masks before J and F;
* J = |gt & pred| / |gt | pred| over non-void pixels, 1 when the union is empty;
* F: one-pixel boundaries from ``seg2bmap``, each dilated by a disk of radius
  ``bound_pix = ceil(0.008 * image diagonal)``; precision = fraction of predicted boundary pixels
  within the dilated gt boundary, recall = the converse, F = 2PR / (P + R); both boundaries empty
  gives 1, exactly one empty gives 0;
* per object over its scored frames: Mean, Recall (fraction of frames > 0.5) and Decay (mean of the
  first of 4 bins minus mean of the last, bins from ``round(linspace(1, n, 5) + 1e-10) - 1``);
* summary: every statistic averaged over all objects of all sequences;
  J&F-Mean = (J-Mean + F-Mean) / 2.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import InputError

BOUND_TH = 0.008
VOID_LABEL = 255
SUMMARY_KEYS: tuple[str, ...] = (
    "J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay",
)

__all__ = [
    "BOUND_TH",
    "SUMMARY_KEYS",
    "VOID_LABEL",
    "ObjectResult",
    "bound_pixels",
    "boundary_f_measure",
    "db_statistics",
    "disk",
    "evaluate_sequence",
    "region_similarity",
    "seg2bmap",
    "summarize",
]


def disk(radius: float) -> np.ndarray:
    """Disk structuring element: ``(2r+1) x (2r+1)`` uint8 array, 1 where ``x^2 + y^2 <= r^2``.

    ``radius`` is truncated to an integer for the array size (as ``skimage.morphology.disk``).
    """
    r = int(radius)
    if r < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary segmentation (D. Martin's ``seg2bmap``).

    A pixel is a boundary pixel when it differs from its east, south or south-east neighbour, so
    the boundary lies half a pixel towards the origin from the true contour: for a rectangle
    covering rows ``r0..r1`` and columns ``c0..c1`` the boundary is the outline of rows
    ``r0-1..r1`` x columns ``c0-1..c1``. On the last row only the east neighbour is compared, on
    the last column only the south one, and the bottom-right pixel is never a boundary.

    Returns:
        bool array of the same shape.
    """
    seg = np.asarray(seg).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap expects a 2-D mask, got shape {seg.shape}")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def bound_pixels(shape: Sequence[int], bound_th: float = BOUND_TH) -> float:
    """Boundary tolerance in pixels: ``bound_th`` itself when >= 1, else
    ``ceil(bound_th * sqrt(H^2 + W^2))`` (e.g. 2 for 100x100, 8 for 480x854)."""
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm(np.asarray(shape[:2], dtype=np.float64))))


def _void(shape: tuple[int, ...], void: np.ndarray | None) -> np.ndarray:
    """The void mask as bool (all False when ``None``), checked against ``shape``."""
    if void is None:
        return np.zeros(shape, dtype=bool)
    void = np.asarray(void).astype(bool)
    if void.shape != shape:
        raise ValueError(f"void mask shape {void.shape} differs from mask shape {shape}")
    return void


def region_similarity(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J (Jaccard index) of two binary masks, void pixels excluded.

    Returns 1.0 when the union (outside void) is empty.
    """
    gt = np.asarray(gt).astype(bool)
    pred = np.asarray(pred).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"annotation {gt.shape} and segmentation {pred.shape} shapes differ")
    keep = ~_void(gt.shape, void)
    inter = np.count_nonzero(gt & pred & keep)
    union = np.count_nonzero((gt | pred) & keep)
    return 1.0 if union == 0 else inter / union


def boundary_f_measure(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> float:
    """Boundary F-measure of two binary masks (void pixels removed from both before ``seg2bmap``).

    Precision: fraction of the predicted boundary within ``bound_pix`` (disk) of the gt boundary;
    recall: fraction of the gt boundary within ``bound_pix`` of the predicted one;
    ``F = 2PR / (P + R)`` (0 when P + R = 0). No predicted boundary: P = 1, R = 0; no gt boundary:
    P = 0, R = 1; neither: F = 1.
    """
    gt = np.asarray(gt).astype(bool)
    pred = np.asarray(pred).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"annotation {gt.shape} and segmentation {pred.shape} shapes differ")
    keep = ~_void(gt.shape, void)
    fg_boundary = seg2bmap(pred & keep)
    gt_boundary = seg2bmap(gt & keep)
    n_fg = int(np.count_nonzero(fg_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision or recall is 0 and the other is 1
    kernel = disk(bound_pixels(gt.shape, bound_th))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(fg_boundary & gt_dil) / n_fg
    recall = np.count_nonzero(gt_boundary & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_statistics(per_frame_values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, recall and decay of per-frame values, as the official ``db_statistics``.

    * mean: ``nanmean(X)``;
    * recall: ``nanmean(X > 0.5)``;
    * decay: with ``ids = round(linspace(1, n, 5) + 1e-10) - 1`` the 4 bins are
      ``X[ids[i] : ids[i+1] + 1]`` (neighbouring bins share their edge frame);
      decay = ``nanmean(bin 0) - nanmean(bin 3)``.

    Empty input gives NaNs. (The official code casts ``ids`` to uint8, which only differs from this
    for sequences of more than 256 scored frames, where it wraps around.)
    """
    x = np.asarray(per_frame_values, dtype=np.float64).ravel()
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(x))
        recall = float(np.nanmean(x > 0.5))
        ids = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(np.int64)
        bins = [x[ids[i]:ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


@dataclass
class ObjectResult:
    """Per-frame J and F of one object of one sequence (scored frames only).

    Attributes:
        sequence: sequence name.
        object_id: object id (1-based, as in the index PNGs).
        frames: names of the scored frames.
        J: region similarity per scored frame.
        F: boundary F-measure per scored frame.
    """

    sequence: str
    object_id: int
    frames: list[str] = field(default_factory=list)
    J: np.ndarray = field(default_factory=lambda: np.zeros(0))
    F: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def stats(self) -> dict[str, float]:
        """``{"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"}``."""
        jm, jr, jd = db_statistics(self.J)
        fm, fr, fd = db_statistics(self.F)
        return {
            "J&F-Mean": (jm + fm) / 2, "J-Mean": jm, "J-Recall": jr, "J-Decay": jd,
            "F-Mean": fm, "F-Recall": fr, "F-Decay": fd,
        }


def _frame_names(n: int, frame_names: Sequence[str] | None) -> list[str]:
    """The frame names as strings: ``frame_names``, or ``"0"``, ``"1"``, ... for ``n`` frames."""
    return [str(i) for i in range(n)] if frame_names is None else [str(s) for s in frame_names]


def _check_lengths(sequence: str, n: int, num_preds: int, num_names: int) -> None:
    """Raise unless there are as many predictions and names as the ``n`` (>= 3) gt frames."""
    if num_preds != n or num_names != n:
        raise InputError(
            f"{sequence}: {n} ground-truth frames but {num_preds} predictions and "
            f"{num_names} frame names"
        )
    if n < 3:
        raise InputError(
            f"{sequence}: needs at least 3 annotated frames (the first and last are not scored), "
            f"got {n}"
        )


def _num_objects(first_gt: np.ndarray) -> int:
    """Number of objects of a sequence: the largest id of its first gt frame (void counts as 0)."""
    first = np.asarray(first_gt)
    return int(np.max(np.where(first == VOID_LABEL, 0, first)))


def _checked_prediction(
    pred: np.ndarray | None, gt: np.ndarray, t: int, name: str, sequence: str,
    num_objects: int, ignore_extra_ids: bool,
) -> np.ndarray:
    """The prediction of scored frame ``t`` as an array, checked against its gt frame.

    Raises:
        InputError: the prediction is missing, its size differs from ``gt``, or (unless
            ``ignore_extra_ids``) it holds an id above ``num_objects``.
    """
    if pred is None:
        raise InputError(f"{name}: prediction missing for frame {t} of {sequence}")
    pred = np.asarray(pred)
    if pred.shape != gt.shape:
        raise InputError(
            f"{name}: prediction size {pred.shape[1::-1]} differs from the ground truth "
            f"size {gt.shape[1::-1]} (width, height) in {sequence}"
        )
    top = int(pred.max()) if pred.size else 0
    if top > num_objects and not ignore_extra_ids:
        raise InputError(
            f"{name}: predicted object id {top} but the first ground-truth frame of "
            f"{sequence} has {num_objects} object(s)"
        )
    return pred


def _score_frame(
    results: Sequence[ObjectResult], t: int, gt: np.ndarray, pred: np.ndarray, bound_th: float
) -> None:
    """Write J and F of every object on scored frame ``t`` into slot ``t - 1`` of its result."""
    void = gt == VOID_LABEL
    for res in results:
        k = res.object_id
        res.J[t - 1] = region_similarity(gt == k, pred == k, void)
        res.F[t - 1] = boundary_f_measure(gt == k, pred == k, void, bound_th)


def evaluate_sequence(
    gt_frames: Sequence[np.ndarray],
    pred_frames: Sequence[np.ndarray | None],
    *,
    sequence: str = "sequence",
    frame_names: Sequence[str] | None = None,
    bound_th: float = BOUND_TH,
    ignore_extra_ids: bool = False,
) -> list[ObjectResult]:
    """Score one sequence under the DAVIS 2017 semi-supervised protocol.

    Args:
        gt_frames: ground-truth index maps of ALL annotated frames in order (0 = background,
            255 = void); the first and the last are not scored, the first defines the objects.
        pred_frames: predicted index maps, same length; entries for the first and the last frame are
            not read (may be ``None``).
        sequence: sequence name, used in results and messages.
        frame_names: names of the frames (default ``"0"``, ``"1"``, ...), used in messages.
        bound_th: boundary tolerance (fraction of the diagonal, or pixels when >= 1).
        ignore_extra_ids: drop predicted ids above the number of objects instead of raising.

    Returns:
        one :class:`ObjectResult` per object ``1 .. max(first gt frame)`` (empty when that frame
        holds no object).

    Raises:
        InputError: fewer than 3 frames, lengths differ, a scored prediction is missing or its size
            differs from the ground truth, or (unless ``ignore_extra_ids``) a prediction holds an id
            above the number of objects.
    """
    n = len(gt_frames)
    names = _frame_names(n, frame_names)
    _check_lengths(sequence, n, len(pred_frames), len(names))
    num_objects = _num_objects(gt_frames[0])
    results = [ObjectResult(sequence, k, names[1:-1], np.zeros(n - 2), np.zeros(n - 2))
               for k in range(1, num_objects + 1)]
    if num_objects == 0:
        return results
    for t in range(1, n - 1):
        gt = np.asarray(gt_frames[t])
        pred = _checked_prediction(pred_frames[t], gt, t, names[t], sequence, num_objects,
                                   ignore_extra_ids)
        _score_frame(results, t, gt, pred, bound_th)
    return results


def summarize(objects: Sequence[ObjectResult]) -> dict[str, float]:
    """Average every per-object statistic over all objects (of all sequences).

    Returns:
        the official keys ``J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay``
        (NaN when there is no object); ``J&F-Mean = (J-Mean + F-Mean) / 2``.
    """
    if not objects:
        return {k: float("nan") for k in SUMMARY_KEYS}
    per = [o.stats() for o in objects]
    out = {k: float(np.mean([p[k] for p in per])) for k in SUMMARY_KEYS if k != "J&F-Mean"}
    out["J&F-Mean"] = (out["J-Mean"] + out["F-Mean"]) / 2
    return {k: out[k] for k in SUMMARY_KEYS}

