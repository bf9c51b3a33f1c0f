"""Small PNG plots of training curves (matplotlib when installed, else drawn with PIL)."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .files import atomic_path


def save_curves(
    path: str | os.PathLike,
    loss: tuple[Sequence[float], Sequence[float]],
    score: tuple[Sequence[float], Sequence[float]] | None = None,
    title: str = "",
    score_label: str = "val mIoU",
) -> None:
    """Write a PNG with a loss curve (left axis) and optionally a score curve (right axis, 0..1).

    Args:
        path: output ``.png``; its folder must exist.
        loss: ``(steps, values)``.
        score: ``(steps, values)`` or None.
        title: plot title.
        score_label: legend / axis name of the score.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _save_curves_pil(path, loss, score, title, score_label)
        return
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(loss[0], loss[1], color="tab:blue", lw=1, label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="tab:blue")
    if score is not None and len(score[0]):
        ax2 = ax.twinx()
        ax2.plot(score[0], score[1], "o-", color="tab:orange", ms=3, label=score_label)
        ax2.set_ylabel(score_label, color="tab:orange")
        ax2.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _save_curves_pil(path, loss, score, title, score_label) -> None:
    w, h, m = 640, 360, 40
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    d.rectangle([m, m, w - m, h - m], outline="black")
    xs = np.asarray(loss[0], dtype=float)
    x_max = max(float(xs.max(initial=1.0)), 1.0)

    def line(steps, values, lo, hi, color) -> None:
        v = np.asarray(values, dtype=float)
        if v.size == 0:
            return
        px = m + np.asarray(steps, dtype=float) / x_max * (w - 2 * m)
        py = h - m - (v - lo) / max(hi - lo, 1e-12) * (h - 2 * m)
        d.line(list(zip(px.tolist(), py.tolist())), fill=color, width=2)

    ys = np.asarray(loss[1], dtype=float)
    lo, hi = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    line(xs, ys, lo, hi, (31, 119, 180))
    d.text((m, 8), f"{title}  train loss {lo:.4g}..{hi:.4g} (blue)", fill="black")
    if score is not None:
        line(score[0], score[1], 0.0, 1.0, (255, 127, 14))
        d.text((m, h - m + 8), f"{score_label} 0..1 (orange); x = step 0..{int(x_max)}", fill="black")
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
