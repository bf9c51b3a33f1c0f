"""Validation during training: fixed samples, the query half painted, mIoU by nearest colour.

``data.val`` in a ``conf/data/*_train.yaml`` names the sets, each like a training set
(``{_target_, length, [recipe], ...kwargs}``; ``length`` = number of validation samples), e.g. the
held-out generated episodes next to held-out PASCAL classes. Every ``train.val_every`` steps each
set is run with the whole query half masked (the test task) and scored:

* ``loss``: the training loss (masked smooth-L1 with the run's beta and foreground weight);
* ``miou``: the query half decoded to the nearest colour of the sample's palette (the colours of
  its target canvas, background black), IoU of each foreground id present in the query's target,
  averaged over all (sample, id) pairs.

Samples are a pure function of the set's config and ``VAL_SEED`` (not of the training seed), so
two runs are compared on the same samples. Rows go to ``val_log.csv``
(``step,set,loss,miou,pairs``) in the output folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..codec.canvas import paint_from_half, query_mask, split
from ..codec.palette import colors_to_labels, decode_paint
from ..data.in_context import build_train_dataset
from ..model.loss import masked_smooth_l1
from .logbook import CsvLog

__all__ = ["VAL_FIELDS", "VAL_LOG_NAME", "VAL_SEED", "Validator", "score_paint"]

VAL_SEED = 2**31 + 17
VAL_LOG_NAME = "val_log.csv"
VAL_FIELDS = ("step", "set", "loss", "miou", "pairs")
DEFAULT_VAL_RECIPE = {
    "scale": [0.7, 1.0], "jitter_p": 0.0, "mix_context_p": 0.0, "same_image_p": 0.0,
    "label_subset_p": 0.0, "tile_prompts_p": 0.0,
}


def _target_colors(tgts: torch.Tensor) -> np.ndarray:
    """uint8 ``[N, 2h, w, 3]`` colours of normalised target canvases ``[N, 3, 2h, w]``."""
    return np.rint(paint_from_half(tgts)).astype(np.uint8)


def score_paint(paint: np.ndarray, target: np.ndarray) -> list[float]:
    """IoU of each foreground id of one sample.

    Args:
        paint: ``[h, w, 3]`` float RGB in 0..255, the painted query half.
        target: uint8 ``[2h, w, 3]``, the whole target canvas (its colours are the palette; black =
            background).

    Returns:
        One IoU in [0, 1] per foreground colour present in the query half of ``target``.
    """
    colors = np.unique(target.reshape(-1, 3), axis=0)
    black = (colors == 0).all(1)
    palette = np.concatenate([np.zeros((1, 3), np.uint8), colors[~black]])
    h = target.shape[0] // 2
    gt = colors_to_labels(target[h:], palette)
    pred, _ = decode_paint(paint, palette)
    out = []
    for k in np.unique(gt):
        if k == 0:
            continue
        a, b = gt == k, pred == k
        out.append(float((a & b).sum() / max((a | b).sum(), 1)))
    return out


class Validator:
    """The validation sets of a run and their scoring.

    Args:
        val_cfg: ``{name: set config}`` (``data.val``); ``recipe`` keys of a set override
            :data:`DEFAULT_VAL_RECIPE`.
        half_size: ``(h, w)`` of one canvas half.
        batch_size: samples per forward.
    """

    def __init__(self, val_cfg: Mapping[str, Any], half_size: tuple[int, int], batch_size: int
                 ) -> None:
        self.sets: dict[str, list[dict[str, torch.Tensor]]] = {}
        self.batch_size = int(batch_size)
        for name, cfg in sorted(dict(val_cfg).items()):
            cfg = dict(cfg)
            length = int(cfg.pop("length", 64))
            recipe = {**DEFAULT_VAL_RECIPE, **dict(cfg.pop("recipe", None) or {})}
            ds = build_train_dataset(
                {"length": length, "recipe": recipe, "sets": {name: cfg}}, half_size, VAL_SEED
            )
            items = [ds[i] for i in range(length)]
            self.sets[name] = [
                {k: torch.stack([it[k] for it in items[i : i + batch_size]]) for k in items[0]}
                for i in range(0, length, batch_size)
            ]

    @torch.no_grad()
    def run(
        self,
        net: nn.Module,
        device: torch.device,
        autocast: Callable[[], Any],
        beta: float,
        fg_weight: float,
    ) -> dict[str, dict[str, float]]:
        """Score every set; returns ``{name: {"loss", "miou", "pairs"}}`` (mIoU in percent)."""
        was_training = net.training
        net.eval()
        out = {}
        try:
            for name, batches in self.sets.items():
                losses, ious = [], []
                for b in batches:
                    n = b["imgs"].shape[0]
                    mask = query_mask(net.grid_size).expand(n, -1).to(device)
                    imgs, tgts = b["imgs"].to(device), b["tgts"].to(device)
                    with autocast():
                        pred = net(imgs, tgts, bool_masked_pos=mask,
                                   seg_type=b["seg_type"].to(device))
                    pred = pred.float()
                    losses.append(float(masked_smooth_l1(
                        pred, tgts, mask, net.patch_size, valid=b["valid"].to(device), beta=beta,
                        fg_weight=fg_weight,
                    )) * n)
                    paints = paint_from_half(split(pred)[1])
                    targets = _target_colors(b["tgts"])
                    for paint, target in zip(paints, targets):
                        ious += score_paint(paint, target)
                count = sum(b["imgs"].shape[0] for b in batches)
                out[name] = {
                    "loss": sum(losses) / max(count, 1),
                    "miou": 100.0 * float(np.mean(ious)) if ious else float("nan"),
                    "pairs": len(ious),
                }
        finally:
            net.train(was_training)
        return out


class ValLog(CsvLog):
    """``val_log.csv`` of rank 0: one row per validation set and step (rows up to ``keep_until`` kept on
    resume, like the train log)."""

    def __init__(self, path: Path, enabled: bool = True, keep_until: int | None = None) -> None:
        super().__init__(path, enabled, keep_until, fields=VAL_FIELDS)

    def write(self, step: int, results: Mapping[str, Mapping[str, float]]) -> None:  # type: ignore[override]
        self.write_rows([{"step": step, "set": name, "loss": f"{r['loss']:.6g}", "miou": f"{r['miou']:.4g}",
                          "pairs": r["pairs"]} for name, r in results.items()])
