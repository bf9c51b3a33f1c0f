"""A few generated examples written to disk (:func:`make_examples`)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ...io.files import atomic_path
from ...io.masks import davis_palette
from .clips import generate_clip
from .episodes import Episode, generate_episode

# The VOC / DAVIS palette lives in painter_seg.io.masks; this name is kept for existing imports.
label_palette = davis_palette


def _save_mask(path: Path, labels: np.ndarray) -> None:
    """Palette PNG (ids as indices, :func:`label_palette` colours), written atomically."""
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(label_palette().reshape(-1).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, optimize=True)


def _save_image(path: Path, rgb: np.ndarray) -> None:
    """JPEG at quality 88 (keeps the examples small), written atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, quality=88)


def _concept_name(ep: Episode) -> str:
    """A file-name friendly name of an episode's concept."""
    c = ep.meta["concept"]
    if "instances" in c:
        return "-".join(d["family"] for d in c["instances"])
    if "families" in c:
        return "-".join(c["families"])
    return str(c.get("family") or c.get("color") or c.get("texture"))


def make_examples(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, list[Path]]:
    """Write a few small examples (224 px, well under 1 MB in total).

    Layout::

        out_dir/few_shot/<kind>_<concept>_NN.jpg + .png   # flat pairs: prompt(s) then query
        out_dir/clip/JPEGImages/synthetic/00000.jpg ...  # a 16-frame clip
        out_dir/clip/Annotations/synthetic/00000.png     # its first-frame mask

    Masks are palette ("P") PNGs whose indices are the ids (0 black background). The few-shot
    folder reads as the ``flat_pairs`` layout and the clip as the ``davis`` layout of
    :mod:`painter_seg.data.folders`.

    Returns:
        ``{"few_shot": [paths...], "clip": [paths...]}`` of every file written.
    """
    out = Path(out_dir)
    fs_dir = out / "few_shot"
    img_dir = out / "clip" / "JPEGImages" / "synthetic"
    ann_dir = out / "clip" / "Annotations" / "synthetic"
    for d in (fs_dir, img_dir, ann_dir):
        d.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {"few_shot": [], "clip": []}
    plans = (("semantic", 2), ("instance", 1), ("multiclass", 1), ("color", 1))
    for i, (kind, shots) in enumerate(plans):
        ep = generate_episode(seed * 1000 + i, kind, num_shots=shots)
        name = _concept_name(ep)
        for j, (img, lab) in enumerate(ep.prompts + [ep.query]):
            stem = fs_dir / f"{kind}_{name}_{j:02d}"
            _save_image(stem.with_suffix(".jpg"), img)
            _save_mask(stem.with_suffix(".png"), lab)
            written["few_shot"] += [stem.with_suffix(".jpg"), stem.with_suffix(".png")]
    frames, labels = generate_clip(seed, 16, num_objects=3, leave_and_return=True)
    for t, frame in enumerate(frames):
        p = img_dir / f"{t:05d}.jpg"
        _save_image(p, frame)
        written["clip"].append(p)
    p = ann_dir / "00000.png"
    _save_mask(p, labels[0])
    written["clip"].append(p)
    return written
