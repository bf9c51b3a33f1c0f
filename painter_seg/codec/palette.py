"""Label ids <-> colours: the palettes SegGPT paints with, and decoding a painting back to labels.

SegGPT has no class head: a prompt mask is shown to it as a colour image and it *paints* the
query's mask in the same colours. This module owns that colour code and nothing else (numpy only):

- :func:`build_palette`: the fixed palette of the HF ``SegGptImageProcessor`` / Painter (a grid of
  colours, 0 = black).
- :func:`distinct_palette`: bright colours far apart (yellow, cyan, magenta, ...) for models that
  paint coarsely, such as the shipped one; :func:`make_palette` picks a palette by name
  (``PALETTES``).
- :func:`random_palette`: random, well-separated colours (training-style random colouring).
- :func:`labels_to_colors` / :func:`colors_to_labels`: exact, invertible maps between ``[H, W]``
  ids and colours.
- :func:`decode_paint`: nearest palette colour of a float painting, with a per-pixel confidence in
  [0, 1].
- :func:`compact_labels` / :func:`expand_labels`: arbitrary ids (e.g. ``{0, 3, 17}``) <-> ``0..K``.

Convention everywhere: id 0 is background and is painted black ``(0, 0, 0)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InputError

# Pixels per chunk x palette size the decoder works on at once (about 1 MiB: stays in cache).
_DECODE_CHUNK_ELEMS = 1 << 18
# random_palette gives up drawing at min_dist after this many rejected candidates in a row.
_GREEDY_MISSES = 2048


def build_palette(num_labels: int) -> np.ndarray:
    """The fixed SegGPT palette (HF ``build_palette``, from Painter's COCO colour script).

    ``base = int(num_labels ** (1/3)) + 1`` colour levels per channel, ``margin = 256 // base``
    apart, counting down from 255; label ``loc + 1`` gets ``R = 255 - (loc // base**2) * margin``,
    ``G = 255 - ((loc % base**2) // base) * margin``, ``B = 255 - (loc % base) * margin``.
    ``num_labels = 1`` gives white for label 1.

    Args:
        num_labels: number of foreground labels K (>= 0).

    Returns:
        ``[K + 1, 3]`` uint8 RGB; row 0 is black (background), row k the colour of label k.
    """
    if num_labels < 0:
        raise ValueError(f"num_labels must be >= 0, got {num_labels}")
    base = int(num_labels ** (1 / 3)) + 1  # official: float cube root, so 64 -> 3.999... -> base 4
    margin = 256 // base
    loc = np.arange(num_labels, dtype=np.int64)
    out = np.zeros((num_labels + 1, 3), dtype=np.int64)
    out[1:, 0] = 255 - (loc // base**2) * margin
    out[1:, 1] = 255 - ((loc % base**2) // base) * margin
    out[1:, 2] = 255 - (loc % base) * margin
    return out.astype(np.uint8)


# The colours of distinct_palette for 2..7 labels, in order: the three secondaries first (pairwise 360 apart and
# 360 from black), then white and the primaries. Chosen on generated multi-instance / multi-class episodes of
# a development seed (docs/training "Palette").
_DISTINCT = np.array([[255, 255, 0], [0, 255, 255], [255, 0, 255], [255, 255, 255],
                      [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


def distinct_palette(num_labels: int) -> np.ndarray:
    """Bright, well-separated colours for K labels: what a small model paints and decodes best.

    One label is white (as :func:`build_palette`); 2..7 labels take yellow, cyan, magenta, white, red,
    green, blue in that order (at least 255 apart); more labels fall back to :func:`build_palette`.
    The SegGPT palette gives 2 labels white and light yellow, 128 apart in one channel: a coarse painting
    between them decodes to the wrong instance.

    Returns:
        ``[K + 1, 3]`` uint8 RGB; row 0 black.
    """
    if num_labels < 0:
        raise ValueError(f"num_labels must be >= 0, got {num_labels}")
    if num_labels <= 1 or num_labels > len(_DISTINCT):
        return build_palette(num_labels)
    return np.concatenate([np.zeros((1, 3), np.uint8), _DISTINCT[:num_labels]])


PALETTES = {"seggpt": build_palette, "distinct": distinct_palette}


def make_palette(name: str, num_labels: int) -> np.ndarray:
    """The ``[K + 1, 3]`` palette ``name`` (a key of ``PALETTES``) for K labels."""
    if name not in PALETTES:
        raise InputError(f"palette={name!r}: expected one of {', '.join(PALETTES)}")
    return PALETTES[name](num_labels)


def random_palette(num_labels: int, rng: np.random.Generator, min_dist: float = 60.0) -> np.ndarray:
    """Random colours for K labels, at least ``min_dist`` apart (and from black) where feasible.

    Colours are drawn uniformly and accepted greedily while candidates at least ``min_dist`` from
    all earlier colours keep turning up. If they stop (too many labels for ``min_dist``), the
    palette is instead a random subset of a regular RGB grid with ``b`` levels per channel
    (``b**3 >= K + 1``): colours ``255 / (b - 1)`` apart, e.g. 63.75 for K <= 124, 42.5 for
    K <= 342. Any K up to ``2**24 - 1`` works. Deterministic for a given ``rng`` state.

    Args:
        num_labels: number of foreground labels K (>= 0).
        rng: numpy random generator (e.g. ``np.random.default_rng(seed)``).
        min_dist: wanted Euclidean distance between any two colours (0..255 per channel).

    Returns:
        ``[K + 1, 3]`` uint8 RGB, row 0 black, all rows distinct.
    """
    if num_labels < 0 or num_labels >= 1 << 24:
        raise ValueError(f"num_labels must be in 0..{(1 << 24) - 1}, got {num_labels}")
    chosen = np.zeros((num_labels + 1, 3), dtype=np.float64)
    count = 1  # row 0 = black is always taken
    need = max(float(min_dist), 1.0) ** 2
    misses = 0
    while count < num_labels + 1 and misses < _GREEDY_MISSES:
        batch = rng.integers(0, 256, size=(256, 3)).astype(np.float64)
        d2 = ((batch[:, None, :] - chosen[None, :count, :]) ** 2).sum(-1).min(1)
        start = count
        for cand in batch[d2 >= need]:  # far from all earlier colours; now greedy within the batch
            if count == num_labels + 1:
                break
            if count == start or ((chosen[start:count] - cand) ** 2).sum(-1).min() >= need:
                chosen[count] = cand
                count += 1
        misses = 0 if count > start else misses + len(batch)
    if count == num_labels + 1:
        return chosen.astype(np.uint8)
    # too many labels for min_dist: a random subset of the widest regular grid that holds them
    b = max(2, int(np.ceil((num_labels + 1) ** (1 / 3))))
    while b**3 < num_labels + 1:
        b += 1
    levels = np.rint(np.linspace(0.0, 255.0, b)).astype(np.int64)
    idx = rng.choice(b**3 - 1, size=num_labels, replace=False) + 1  # grid point 0 is black
    grid = np.stack([levels[idx // (b * b)], levels[(idx // b) % b], levels[idx % b]], axis=1)
    return np.concatenate([np.zeros((1, 3), np.int64), grid]).astype(np.uint8)


def labels_to_colors(labels: Any, palette: np.ndarray) -> np.ndarray:
    """Paint a label map with a palette.

    Args:
        labels: ``[H, W]`` integer (or bool) ids in ``0..len(palette) - 1``.
        palette: ``[K + 1, 3]`` uint8 RGB, row k = colour of id k.

    Returns:
        ``[H, W, 3]`` uint8 RGB.

    Raises:
        ValueError: an id is negative or has no palette row.
    """
    labels = np.asarray(labels)
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be [K, 3], got shape {palette.shape}")
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= len(palette):
            raise ValueError(
                f"labels span {lo}..{hi} but the palette has {len(palette)} colours (ids 0.."
                f"{len(palette) - 1})"
            )
    return palette.astype(np.uint8)[labels]


def _color_keys(colors: np.ndarray) -> np.ndarray:
    c = colors.astype(np.int64)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def colors_to_labels(colors: Any, palette: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`labels_to_colors`: each pixel's colour must be a palette colour.

    Args:
        colors: ``[H, W, 3]`` uint8 RGB.
        palette: ``[K + 1, 3]`` uint8 RGB. If a colour appears twice, the lower id wins.

    Returns:
        ``[H, W]`` int64 ids.

    Raises:
        ValueError: some pixel colours are not in the palette (the first few are named).
    """
    colors = np.asarray(colors)
    palette = np.asarray(palette)
    if colors.ndim != 3 or colors.shape[-1] != 3:
        raise ValueError(f"colors must be [H, W, 3], got shape {colors.shape}")
    keys = _color_keys(colors)
    pal_keys = _color_keys(palette)
    uniq, first = np.unique(pal_keys, return_index=True)  # first = lowest id of each colour
    pos = np.clip(np.searchsorted(uniq, keys), 0, len(uniq) - 1)
    found = uniq[pos] == keys
    if not found.all():
        bad = np.unique(keys[~found])
        shown = ", ".join(f"({k >> 16 & 255}, {k >> 8 & 255}, {k & 255})" for k in bad[:5].tolist())
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(
            f"{int((~found).sum())} pixels have colours not in the palette: {shown}{more}"
        )
    return first[pos].astype(np.int64)


def palette_sigma(palette: np.ndarray) -> float:
    """Default colour-match kernel width: a quarter of the smallest distance between two colours.

    With it a pixel exactly on a colour scores ~0.9997 against a neighbour one spacing away, and a
    pixel half-way between two colours scores 0.5. A palette with fewer than two distinct colours
    gives 1.0.
    """
    pal = np.unique(np.asarray(palette, dtype=np.float64).reshape(-1, 3), axis=0)
    if len(pal) < 2:
        return 1.0
    d2 = ((pal[:, None, :] - pal[None, :, :]) ** 2).sum(-1)
    d2[np.diag_indices(len(pal))] = np.inf
    return float(np.sqrt(d2.min())) / 4.0


def _as_paint(paint: Any) -> np.ndarray:
    if hasattr(paint, "detach"):  # torch tensor (any device)
        paint = paint.detach().float().cpu().numpy()
    paint = np.asarray(paint)
    if paint.ndim != 3 or paint.shape[-1] != 3:
        raise ValueError(f"paint must be [H, W, 3] RGB, got shape {paint.shape}")
    return paint


def _decode_chunks(
    paint: np.ndarray, palette: np.ndarray, sigma: float | None, full: bool
) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Yield ``(slice, labels, p_label, p_background, probs | None)`` over pixel chunks."""
    pal = np.asarray(palette, dtype=np.float64).reshape(-1, 3)
    if len(pal) == 0:
        raise ValueError("palette is empty")
    s = palette_sigma(pal) if sigma is None else float(sigma)
    if s <= 0:
        raise ValueError(f"sigma must be > 0, got {s}")
    # float32 is exact enough unless the kernel is very narrow (colours a few RGB units apart)
    dt = np.float32 if s >= 2.0 else np.float64
    scale = dt(-1.0 / (2.0 * s * s))
    pal = (pal - 127.5).astype(
        dt
    )  # centred: smaller magnitudes, less cancellation in |p|^2 - 2pc + |c|^2
    pal_sq = (pal**2).sum(-1)
    flat = paint.reshape(-1, 3)
    step = max(1024, _DECODE_CHUNK_ELEMS // len(pal))  # chunks that stay in cache
    for p0 in range(0, len(flat), step):
        sl = slice(p0, min(len(flat), p0 + step))
        px = flat[sl].astype(dt) - dt(127.5)
        d2 = px @ pal.T
        d2 *= -2
        d2 += (px**2).sum(-1, keepdims=True)
        d2 += pal_sq
        lab = d2.argmin(1)  # ties -> lower id (background first)
        d2 -= d2.min(1, keepdims=True)
        d2 *= scale
        np.exp(d2, out=d2)  # unnormalised probabilities, 1 at the chosen class
        total = d2.sum(1, dtype=np.float64)
        p_lab = 1.0 / total
        p_bg = d2[:, 0] / total
        probs = (d2 / total[:, None]) if full else None
        yield sl, lab, p_lab, p_bg, probs


def decode_paint(
    paint: Any, palette: np.ndarray, bg_threshold: float = 0.0, sigma: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of a painted mask by nearest palette colour, with a confidence per pixel.

    Score = the chosen class's probability under a softmax over palette colours of
    ``-d**2 / (2 * sigma**2)`` (``d`` = Euclidean RGB distance), ``sigma`` = a quarter of the
    smallest palette spacing by default (:func:`palette_sigma`): ~1 on a palette colour, 0.5
    half-way between two colours.

    Args:
        paint: ``[H, W, 3]`` float RGB in 0..255 (de-normalised model output; a numpy array or torch
            tensor).
        palette: ``[K + 1, 3]`` RGB colours (row 0 = background); colours should be distinct.
        bg_threshold: foreground pixels whose score is below this become background (0); their score
            becomes the background probability.
        sigma: kernel width in RGB units (default: :func:`palette_sigma`).

    Returns:
        ``(labels, scores)``: ``[H, W]`` int64 ids in ``0..K`` and ``[H, W]`` float32 in [0, 1].
    """
    paint = _as_paint(paint)
    h, w, _ = paint.shape
    labels = np.zeros(h * w, dtype=np.int64)
    scores = np.zeros(h * w, dtype=np.float32)
    for sl, lab, p_lab, p_bg, _ in _decode_chunks(paint, palette, sigma, full=False):
        if bg_threshold > 0:
            weak = (lab > 0) & (p_lab < bg_threshold)
            lab = np.where(weak, 0, lab)
            p_lab = np.where(weak, p_bg, p_lab)
        labels[sl] = lab
        scores[sl] = p_lab
    labels, scores = labels.reshape(h, w), scores.reshape(h, w)
    return labels, scores


def decode_paint_scores(paint: Any, palette: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Per-class probabilities of a painted mask (the softmax of :func:`decode_paint`).

    Args:
        paint: ``[H, W, 3]`` float RGB in 0..255.
        palette: ``[K + 1, 3]`` RGB colours.
        sigma: kernel width (default: :func:`palette_sigma`).

    Returns:
        ``[K + 1, H, W]`` float32, summing to 1 over the first axis; its argmax is
        :func:`decode_paint`'s labels.
    """
    paint = _as_paint(paint)
    h, w, _ = paint.shape
    out = np.zeros((len(np.asarray(palette).reshape(-1, 3)), h * w), dtype=np.float32)
    for sl, _lab, _p, _bg, probs in _decode_chunks(paint, palette, sigma, full=True):
        out[:, sl] = probs.T
    out = out.reshape(-1, h, w)
    return out


def compact_labels(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the nonzero ids present to ``1..K`` (in sorted order); 0 stays 0.

    Args:
        labels: ``[H, W]`` integer ids (any values, e.g. ``{0, 3, 17}``).

    Returns:
        ``(compact, ids)``: ``[H, W]`` int64 in ``0..K`` and ``ids`` ``[K]`` int64 with
        ``ids[k - 1]`` = the original id of compact label k. :func:`expand_labels` inverts it
        exactly.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    uniq, inv = np.unique(labels, return_inverse=True)
    ids = uniq[uniq != 0].astype(np.int64)
    rank = np.searchsorted(ids, uniq) + 1
    rank[uniq == 0] = 0
    return rank[inv.reshape(labels.shape)].astype(np.int64), ids


def expand_labels(compact: Any, ids: Any) -> np.ndarray:
    """Inverse of :func:`compact_labels`: compact label k -> ``ids[k - 1]``, 0 -> 0.

    Args:
        compact: ``[H, W]`` integer labels in ``0..len(ids)``.
        ids: ``[K]`` original ids.

    Returns:
        ``[H, W]`` int64 original ids.
    """
    compact = np.asarray(compact)
    table = np.concatenate([[0], np.asarray(ids, dtype=np.int64).reshape(-1)])
    if compact.size and (compact.min() < 0 or compact.max() >= len(table)):
        raise ValueError(
            f"compact labels span {compact.min()}..{compact.max()} "
            f"but only {len(table) - 1} ids given"
        )
    return table[compact]


def labels_to_compact(labels: Any, ids: Any) -> np.ndarray:
    """Compact labels for a given id list: ``ids[k - 1]`` -> k, every other id -> 0 (background).

    The id lookup of prompts and training masks whose classes are fixed in advance (ids absent from
    ``ids``, e.g. an ignore id, become background). :func:`expand_labels` maps back.

    Args:
        labels: ``[H, W]`` integer (or bool) ids.
        ids: ``[K]`` distinct ids >= 1.

    Returns:
        ``[H, W]`` int64 in ``0..K``.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 1 or len(np.unique(ids)) != len(ids)):
        raise ValueError(f"ids must be distinct and >= 1, got {ids.tolist()}")
    hi = max(int(labels.max(initial=0)), int(ids.max(initial=0)))
    lut = np.zeros(hi + 1, dtype=np.int64)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[np.clip(labels, 0, hi)]
