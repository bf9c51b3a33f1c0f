"""Rough prompts: a box or a scribble turned into a prompt mask (GrabCut on the prompt image)."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import InputError


def box_to_mask(image: np.ndarray, box: Sequence[float], refine: bool = True, iters: int = 5) -> np.ndarray:
    """Prompt mask from a box.

    Args:
        image: ``[H, W, 3]`` uint8 RGB prompt image.
        box: ``(x0, y0, x1, y1)`` in pixels, exclusive end.
        refine: run GrabCut inside the box (else the filled box itself is the mask).

    Returns:
        ``[H, W]`` uint8 {0, 1} mask (label 1 = object). Falls back to the filled box if GrabCut finds nothing.
    """
    h, w = image.shape[:2]
    if len(box) != 4:
        raise InputError(f"box {list(box)}: expected 4 numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    x0, x1 = max(0, min(x0, x1)), min(w, max(x0, x1))
    y0, y1 = max(0, min(y0, y1)), min(h, max(y0, y1))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise InputError(f"box {list(box)}: empty inside a {w}x{h} image")
    boxed = np.zeros((h, w), np.uint8)
    boxed[y0:y1, x0:x1] = 1
    if not refine or (x1 - x0) * (y1 - y0) >= 0.98 * h * w:
        return boxed
    gc = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), gc, (x0, y0, x1 - x0, y1 - y0), bgd, fgd, iters,
                cv2.GC_INIT_WITH_RECT)
    mask = np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    return mask if mask.sum() >= 0.05 * boxed.sum() else boxed


def scribble_to_mask(image: np.ndarray, scribble: np.ndarray, iters: int = 5) -> np.ndarray:
    """Prompt mask from scribbles.

    Args:
        image: ``[H, W, 3]`` uint8 RGB prompt image.
        scribble: ``[H, W]`` label map of strokes (0 = no stroke, k > 0 = a stroke on object k).

    Returns:
        ``[H, W]`` int64 label map: each object grown from its strokes by GrabCut (object vs the rest).
    """
    if scribble.shape[:2] != image.shape[:2]:
        raise InputError(f"scribble {scribble.shape[1]}x{scribble.shape[0]} does not match the image "
                         f"{image.shape[1]}x{image.shape[0]}")
    ids = [int(i) for i in np.unique(scribble) if i != 0]
    if not ids:
        raise InputError("scribble has no strokes")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    out = np.zeros(scribble.shape[:2], np.int64)
    for k in ids:
        gc = np.full(scribble.shape[:2], cv2.GC_PR_BGD, np.uint8)
        gc[scribble != 0] = cv2.GC_BGD  # strokes of other objects are background for this one
        strokes = scribble == k
        # grow the strokes a little as probable foreground so that GrabCut has a seed region
        grown = cv2.dilate(strokes.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
        gc[grown & (scribble == 0)] = cv2.GC_PR_FGD
        gc[strokes] = cv2.GC_FGD
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(bgr, gc, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
            obj = np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD))
        except cv2.error:  # e.g. no background sample at all
            obj = grown
        out[obj & (out == 0)] = k
    return out
