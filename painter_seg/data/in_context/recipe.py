"""The knobs of the training-sample recipe (:class:`InContextRecipe`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InputError

LabeledImage = tuple[np.ndarray, np.ndarray]  # (uint8 [H, W, 3] RGB, int [H, W] ids)


@dataclass
class InContextRecipe:
    """Knobs of the sample recipe (defaults: paper / Painter where known, else conservative).

    Attributes:
        scale: area fraction range of the random resized crop.
        ratio: aspect-ratio range (w / h) of the crop.
        hflip_p: probability of a horizontal flip (image and labels together).
        jitter_p: probability of colour jitter on each image.
        brightness / contrast / saturation: jitter strengths (factors drawn in ``[1 - s, 1 + s]``).
        mix_context_p: probability that a sample is a mix-context one.
        mix_context_n: range (inclusive) of views stitched per half in a mix-context sample.
        mix_crop_scale: area fraction range of the crop taken from a mix-context grid.
        same_image_p: probability that the prompt is another augmented view of the query image
            (always the case when the context has a single pair).
        label_subset_p: probability of keeping only a random non-empty subset of the ids.
        min_color_dist: wanted distance between random colours (0..255 per channel).
        ignore_index: label id whose pixels get ``valid = 0`` and are painted black (None = none).
        tile_prompts_p: probability that a sample's prompt half is a spatial-ensemble grid of K
            prompt views (:func:`~painter_seg.codec.canvas.cell_bounds` cells, n = ceil(sqrt(K))
            per side) over one full-size query view: the layout of the ``spatial_ensemble``
            strategy. 0 draws nothing (samples bit-identical to a recipe without the knob).
        tile_prompts_k: range (inclusive) of K, the number of tiled prompt views.
    """

    scale: tuple[float, float] = (0.3, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    mix_context_p: float = 0.1
    mix_context_n: tuple[int, int] = (2, 4)
    mix_crop_scale: tuple[float, float] = (0.5, 1.0)
    same_image_p: float = 0.1
    label_subset_p: float = 0.2
    min_color_dist: float = 60.0
    ignore_index: int | None = None
    tile_prompts_p: float = 0.0
    tile_prompts_k: tuple[int, int] = (2, 5)

    @classmethod
    def coerce(cls, recipe: InContextRecipe | Mapping[str, Any] | None) -> InContextRecipe:
        """``recipe`` itself when it is one, else :meth:`from_dict` of it (None: the defaults)."""
        return recipe if isinstance(recipe, cls) else cls.from_dict(recipe)

    @classmethod
    def from_dict(
        cls, cfg: Mapping[str, Any] | None, base: InContextRecipe | None = None
    ) -> InContextRecipe:
        """A recipe from a (possibly partial) mapping on top of ``base`` (default: the defaults)."""
        base = base or cls()
        if not cfg:
            return base
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise InputError(f"unknown recipe keys {unknown}; known: {', '.join(sorted(names))}")
        vals = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in dict(cfg).items()}
        return dataclasses.replace(base, **vals)
