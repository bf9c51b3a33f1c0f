"""Prompt tuning (SegGPT paper 4.2, "in-context tuning"): learn a prompt pair for a frozen model.

The model is frozen; the only trainable tensors are a prompt image and a prompt mask of the
model's prompt-half size. They are learned from labelled images of one scene or one fixed set of
classes with the training loss of SegGPT (masked smooth-L1 on the query half), then used like an
example pair (``build_strategy("tuned", model, prompt)``). Several classes are taught at once:
class k of the masks is painted in colour k of the model's palette
(``model.palette``: :func:`~painter_seg.codec.palette.make_palette`).

    tuner = PromptTuner(model, TuneConfig(steps=300, init="mean"))
    prompt = tuner.fit(pairs)            # [(uint8 RGB [H, W, 3], int ids [H, W]), ...]
    prompt.save("scene.safetensors")
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import weights_fingerprint
from ..codec.canvas import (
    canvas_tensors,
    denormalize_tensor,
    labels_to_tensor,
    normalize_tensor,
    paint_to_labels,
    resize_color_mask,
    resize_image,
    resize_labels,
    rgb01_to_tensor,
)
from ..codec.palette import labels_to_colors, labels_to_compact, make_palette
from ..codec.refine import GuidedRefine, resolve_refine
from ..codec.seg_type import SegType
from ..data.in_context import InContextRecipe, augment_view
from ..errors import InputError
from ..model import SegGPT
from ..model.loss import decoded_cross_entropy, masked_smooth_l1
from ..strategies import build_strategy
from ..utils.runtime import autocast, resolve_precision
from ..utils.schedule import build_scheduler
from .artifact import TunedPrompt
from .scene import LabeledImage, score_labels, split_pairs

INITS = ("pair", "mean", "random")
LOSSES = ("paint", "decoded")
OPTIMIZERS = ("adam", "adamw")

# Paired augmentation for one scene: milder crops than training (the scene's layout is the signal),
# no mix-context, no label subsets.
TUNE_RECIPE = InContextRecipe(scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), hflip_p=0.5, jitter_p=0.5,
                              brightness=0.3, contrast=0.3, saturation=0.3, mix_context_p=0.0,
                              same_image_p=0.0, label_subset_p=0.0)


@dataclass
class TuneConfig:
    """Knobs of :class:`PromptTuner`: the one home of the tuning keys (``conf/tune_prompt.yaml``
    lists the same keys with the same defaults at its top level; a test keeps them equal).

    Attributes:
        steps: optimiser steps (at most; early stopping may end sooner).
        batch_size: (image, mask) pairs per step, each one query under the same prompt.
        lr: peak learning rate. The prompt lives in ImageNet-normalised pixel space (about
            -2..2.6), so a step moves each pixel by about ``lr``.
        optimizer: ``adamw`` or ``adam``.
        weight_decay: AdamW decay (pulls the prompt towards grey).
        warmup_steps: linear warm-up, then cosine decay to ``min_lr_ratio * lr``
            (:func:`painter_seg.utils.schedule.warmup_cosine`).
        min_lr_ratio: the final learning rate as a share of ``lr``.
        beta: smooth-L1 transition point. The official SegGPT uses 0.01 (~L1); for our small
            models trained from scratch the L1-like loss settles on painting everything
            background, while an L2-like loss (large beta) keeps the gradient proportional to the
            error: 100 by default. With the official ViT-L weights 0.01 works too.
        fg_weight: loss weight of foreground (class-coloured) target pixels, background 1
            (:func:`~painter_seg.model.loss.masked_smooth_l1`); 1 = unweighted.
        loss: ``paint`` (smooth-L1 of the painted colours, the training loss) or ``decoded`` (cross-entropy of
            the class probabilities the decode reads from the paint, refined as ``refine`` says:
            :func:`~painter_seg.model.loss.decoded_cross_entropy`): the loss of what is scored.
        init: ``pair`` (the training pair ``init_index``), ``mean`` (the mean of the training
            pairs, images and colour masks) or ``random`` (uniform pixels).
        init_index: which training pair ``init="pair"`` starts from.
        anchor: weight of a penalty keeping the prompt close to the initial one: ``anchor`` times
            the mean squared difference (normalised pixels) of each trained tensor from its
            start, added to the loss. 0 = none.
        train_image: learn the prompt image.
        train_mask: learn the prompt mask.
        clamp: keep the prompt inside the valid pixel range [0, 1] after each step.
        augment: paired augmentation of the training pairs (crop, flip, colour jitter), or None.
        val_fraction: share of the pairs held out for validation when no validation pairs are
            given (only with >= 3 pairs; at least one pair stays for training). 0 = none.
        val_every: steps between validations (mIoU of the current prompt on the held-out pairs).
        patience: validations without improvement before stopping (0 = never stop early). With
            validation, the best prompt seen is the one returned.
        precision: ``auto`` (:func:`~painter_seg.utils.runtime.resolve_precision`), ``fp32``,
            ``bf16``, ``fp16``.
        ignore_index: mask id that is neither background nor a class (no loss there), or None.
        max_pairs_init: at most this many pairs are averaged for ``init="mean"``.
        seed: drives the batch order, augmentation, validation split and random init.
        refine: how validation decodes the paint: the decode the prompt will be used with
            (:func:`~painter_seg.codec.refine.resolve_refine`: ``auto``, ``guided``, ``none``), so
            the step kept is the best under it.
    """

    steps: int = 300
    batch_size: int = 4
    lr: float = 0.05
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    beta: float = 100.0
    fg_weight: float = 1.0
    loss: str = "paint"
    init: str = "mean"
    init_index: int = 0
    anchor: float = 0.0
    train_image: bool = True
    train_mask: bool = True
    clamp: bool = True
    augment: InContextRecipe | None = field(
        default_factory=lambda: dataclasses.replace(TUNE_RECIPE))
    val_fraction: float = 0.2
    val_every: int = 25
    patience: int = 4
    precision: str = "auto"
    ignore_index: int | None = 255
    max_pairs_init: int = 32
    seed: int = 0
    refine: Any = "auto"

    def __post_init__(self) -> None:
        resolve_refine(self.refine, (1, 1))  # a bad value is an InputError here
        if self.steps < 1 or self.batch_size < 1:
            raise InputError(f"steps={self.steps}, batch_size={self.batch_size}: both must be >= 1")
        if self.warmup_steps < 0:
            raise InputError(f"warmup_steps={self.warmup_steps}: expected >= 0")
        if self.loss not in LOSSES:
            raise InputError(f"loss={self.loss}: expected one of {', '.join(LOSSES)}")
        if self.init not in INITS:
            raise InputError(f"init={self.init}: expected one of {', '.join(INITS)}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer={self.optimizer}: expected one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0 or not self.beta > 0:
            raise InputError(f"lr={self.lr}, beta={self.beta}: both must be > 0")
        if not self.fg_weight > 0:
            raise InputError(f"fg_weight={self.fg_weight}: expected > 0")
        if not self.anchor >= 0:
            raise InputError(f"anchor={self.anchor}: expected >= 0")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction={self.val_fraction}: expected 0 <= val_fraction < 1")
        if self.val_every < 1 or self.patience < 0:
            raise InputError(f"val_every={self.val_every}, patience={self.patience}: expected "
                             ">= 1, >= 0")
        if not (self.train_image or self.train_mask):
            raise InputError("train_image and train_mask are both false: nothing to tune")

    @classmethod
    def field_names(cls) -> list[str]:
        """The field names, in order: the tuning keys of ``conf/tune_prompt.yaml``."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], ignore_unknown: bool = False) -> TuneConfig:
        """A config from a mapping of field values; ``augment`` may be a mapping of
        :class:`InContextRecipe` fields over :data:`TUNE_RECIPE`, ``true``, or null / false for
        none. Unknown keys are an error unless ``ignore_unknown`` (e.g. a whole job config)."""
        names = cls.field_names()
        unknown = sorted(set(cfg) - set(names))
        if unknown and not ignore_unknown:
            raise InputError(f"unknown tuning keys {unknown}; known: {', '.join(sorted(names))}")
        vals = {k: cfg[k] for k in names if k in cfg}
        if "augment" in vals:
            aug = vals["augment"]
            vals["augment"] = (None if aug in (None, False) else
                               InContextRecipe.from_dict(dict(aug) if aug is not True else {},
                                                         TUNE_RECIPE))
        return cls(**vals)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able field values (``augment`` as a mapping)."""
        return {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                for k, v in ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))}


def _shrink(pair: LabeledImage, short_side: int) -> LabeledImage:
    """Downscale a pair so that its shorter side is at most ``short_side`` (cheap augmentation)."""
    img, lab = np.asarray(pair[0]), np.asarray(pair[1])
    h, w = lab.shape
    if min(h, w) <= short_side:
        return img, lab
    s = short_side / min(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA), resize_labels(lab, size)


def _checked_pairs(pairs: Sequence[LabeledImage]) -> list[LabeledImage]:
    out = [(np.asarray(i), np.asarray(m, dtype=np.int64)) for i, m in pairs]
    if not out:
        raise InputError("prompt tuning needs at least one labelled image")
    for k, (img, lab) in enumerate(out):
        if (img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8
                or img.shape[:2] != lab.shape):
            raise InputError(f"pair {k}: expected a uint8 [H, W, 3] image and an [H, W] mask of "
                             f"the same size, got {img.shape} {img.dtype} and {lab.shape}")
    return out


def _classes(pairs: Sequence[LabeledImage], class_ids: Sequence[int] | None,
             class_names: Sequence[str] | None, ignore_index: int | None
             ) -> tuple[list[int], list[str]]:
    """The class ids (default: every nonzero id of the masks but ``ignore_index``) and names."""
    if class_ids is None:
        found = np.unique(np.concatenate([np.unique(lab) for _, lab in pairs]))
        class_ids = [int(i) for i in found if i != 0 and i != ignore_index]
    ids = [int(i) for i in class_ids]
    if not ids:
        raise InputError("the training masks hold no class (every pixel is background)")
    if min(ids) < 1 or max(ids) > 255 or len(set(ids)) != len(ids):
        raise InputError(f"class ids must be distinct and in 1..255, got {ids}")
    names = [f"class_{i}" for i in ids] if class_names is None else [str(n) for n in class_names]
    if len(names) != len(ids):
        raise InputError(f"{len(names)} class names for {len(ids)} classes {ids}")
    return ids, names


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``requires_grad_(False)`` and eval mode inside the block; each parameter's flag and the mode
    are put back afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.requires_grad_(False)
    model.eval()
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


class _Validator:
    """Held-out mIoU of the prompt being learned: a copy of it in the ``tuned`` strategy, decoded
    at each image's size (:func:`~painter_seg.codec.paint_to_labels`), scored per class."""

    def __init__(self, model: SegGPT, snapshot: TunedPrompt, pairs: Sequence[LabeledImage],
                 precision: str, ignore_index: int | None, refine: Any = None) -> None:
        self.strategy = build_strategy("tuned", model)
        self.snapshot, self.pairs = snapshot, list(pairs)
        self.precision, self.ignore_index = precision, ignore_index
        self.grid = model.half_grid
        self.refine = resolve_refine(refine, self.grid)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> float:
        """mIoU with the prompt ``(image, mask)``, each ``[1, 3, h, w]``."""
        p = self.snapshot
        p.image.copy_(image.detach()[0].cpu())
        p.mask.copy_(mask.detach()[0].cpu())
        self.strategy.set_prompts(tuned=p)
        paints = self.strategy.paint([img for img, _ in self.pairs], self.precision)
        preds = [paint_to_labels(paint, p.palette, p.class_ids, img.shape[:2], image=img,
                                 refine=self.refine, grid=self.grid)[0]
                 for paint, (img, _) in zip(paints, self.pairs)]
        scores = score_labels(preds, [lab for _, lab in self.pairs], p.class_ids,
                              self.ignore_index)
        return float(scores["mIoU"])


@dataclass
class _Progress:
    """The training loop's record: the best validated prompt (step 0 = the initial prompt) and the
    early-stopping count."""

    best_miou: float = -1.0
    best_step: int = -1
    best: tuple[torch.Tensor, torch.Tensor] | None = None
    bad: int = 0
    stopped_early: bool = False
    last_loss: float = float("nan")

    def start(self, miou: float, image: torch.Tensor, mask: torch.Tensor) -> None:
        """The initial prompt ``[3, h, w]`` and its validation: the best so far (step 0)."""
        self.best_miou, self.best_step, self.best = miou, 0, (image, mask)

    def validated(self, miou: float, step: int, image: torch.Tensor, mask: torch.Tensor) -> None:
        if miou > self.best_miou + 1e-4:
            self.best_miou, self.best_step, self.bad = miou, step, 0
            self.best = (image.detach()[0].cpu().clone(), mask.detach()[0].cpu().clone())
        else:
            self.bad += 1


class PromptTuner:
    """Learn a prompt pair for a frozen :class:`SegGPT` from labelled images of one scene.

    Args:
        model: the network. It is frozen during :meth:`fit` (``requires_grad_(False)``, eval mode)
            and put back as it was afterwards; its weights are never written.
        config: :class:`TuneConfig` (defaults if None).

    After :meth:`fit`, ``image`` / ``mask`` are the learned ``[1, 3, h, w]`` parameters and
    ``history`` holds ``{"step", "loss", "lr"}`` per step and ``{"step", "val_miou"}`` per
    validation.
    """

    def __init__(self, model: SegGPT, config: TuneConfig | None = None) -> None:
        self.model = model
        self.config = config or TuneConfig()
        self.image: torch.nn.Parameter | None = None
        self.mask: torch.nn.Parameter | None = None
        self.history: list[dict[str, float]] = []
        self._anchors: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    @property
    def half_size(self) -> tuple[int, int]:
        return self.model.half_size

    @property
    def _refine(self) -> GuidedRefine | None:
        """The decode's refinement (``config.refine`` for this model's grid), which ``loss=decoded`` scores."""
        return resolve_refine(self.config.refine, self.model.half_grid)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ prompt encoding
    def initial_prompt(self, pairs: Sequence[LabeledImage], class_ids: Sequence[int],
                       palette: np.ndarray, init_pair: LabeledImage | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting prompt ``(image, mask)``, each ``[3, h, w]`` normalised (see
        ``TuneConfig.init``; ``init_pair`` replaces ``pairs[init_index]`` for ``init="pair"``)."""
        cfg, (h, w) = self.config, self.half_size
        if cfg.init == "random":
            g = torch.Generator().manual_seed(cfg.seed)
            img, mask = torch.rand(2, h, w, 3, generator=g).numpy()
        else:
            if cfg.init == "pair" and init_pair is not None:
                chosen = [init_pair]
            elif cfg.init == "pair":
                if not 0 <= cfg.init_index < len(pairs):
                    raise InputError(f"init_index={cfg.init_index}: expected 0..{len(pairs) - 1} "
                                     "(the training pairs)")
                chosen = [pairs[cfg.init_index]]
            else:
                chosen = list(pairs[: cfg.max_pairs_init])
            img = np.mean([resize_image(np.asarray(p[0]), (h, w)) for p in chosen], axis=0)
            mask = np.mean([resize_color_mask(labels_to_colors(
                labels_to_compact(p[1], class_ids), palette), (h, w)) for p in chosen], axis=0)
        return rgb01_to_tensor(img).contiguous(), rgb01_to_tensor(mask).contiguous()

    def _batch(self, rng: np.random.Generator, pairs: Sequence[LabeledImage], idx: Sequence[int],
               class_ids: Sequence[int], palette: np.ndarray
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries ``[B, 3, h, w]``, their true colour masks ``[B, 3, h, w]`` (both normalised), the
        loss weight ``[B, 1, h, w]`` (0 on ``ignore_index``) and the true compact ids ``[B, h, w]``."""
        cfg, size = self.config, self.half_size
        imgs, labs = [], []
        for i in idx:
            img, lab = pairs[i]
            if cfg.augment is not None:
                x, lab = augment_view(rng, (img, lab), size, cfg.augment)
                x = x.transpose(1, 2, 0)
            else:
                x, lab = resize_image(img, size), resize_labels(lab, size)
            imgs.append(x)
            labs.append(lab)
        valid = np.stack([np.ones(lab.shape, np.float32) if cfg.ignore_index is None else
                          (lab != cfg.ignore_index).astype(np.float32) for lab in labs])[..., None]
        compact = [labels_to_compact(lab, class_ids) for lab in labs]
        truth = labels_to_tensor(compact, palette, size)
        return (rgb01_to_tensor(np.stack(imgs)), truth,
                torch.from_numpy(valid.transpose(0, 3, 1, 2)),  # [B, 1, h, w]
                torch.from_numpy(np.stack(compact).astype(np.int64)))

    # ------------------------------------------------------------------ training
    def loss(self, queries: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor, seg_type: int,
             precision: str = "fp32", labels: torch.Tensor | None = None,
             palette: np.ndarray | None = None) -> torch.Tensor:
        """The loss (``config.loss``) of the model painting ``queries`` under the current prompt
        (differentiable in the prompt). Inputs as returned by the batch builder, on the model's
        device; ``decoded`` also needs the compact ``labels`` and the ``palette``."""
        assert self.image is not None and self.mask is not None
        b = queries.shape[0]
        imgs, tgts = canvas_tensors(self.image.expand(b, -1, -1, -1),
                                    self.mask.expand(b, -1, -1, -1), queries)
        qmask = self.model.query_mask(queries.device)
        st = torch.full((b,), int(seg_type), device=queries.device)
        with autocast(queries.device, precision):
            pred = self.model(imgs, tgts, qmask, st)
        if self.config.loss == "decoded":
            if labels is None or palette is None:
                raise ValueError("loss='decoded' needs the true labels and the palette")
            h = queries.shape[-2]
            refine = self._refine
            if refine is None:
                return decoded_cross_entropy(pred[:, :, h:], labels, palette, valid=valid,
                                             fg_weight=self.config.fg_weight)
            guide = denormalize_tensor(queries).clamp(0.0, 1.0)
            return decoded_cross_entropy(pred[:, :, h:], labels, palette, guide,
                                         refine.window_radius(queries.shape[-2:], self.model.half_grid),
                                         refine.eps, valid, self.config.fg_weight)
        target = torch.cat([torch.zeros_like(truth), truth], dim=2)  # only the query half is scored
        weight = torch.cat([torch.ones_like(valid), valid], dim=2)
        return masked_smooth_l1(pred.float(), target, qmask, self.model.patch_size, weight,
                                beta=self.config.beta, fg_weight=self.config.fg_weight)

    def anchor_penalty(self) -> torch.Tensor:
        """``config.anchor`` times the mean squared distance of each trained prompt tensor from its
        start (differentiable; 0 before training)."""
        dist = sum((p - p0).pow(2).mean() for p, p0 in self._anchors)
        return self.config.anchor * torch.as_tensor(dist, device=self.device)

    def fit(
        self,
        pairs: Sequence[LabeledImage],
        val_pairs: Sequence[LabeledImage] | None = None,
        *,
        seg_type: SegType | str | int = SegType.SEMANTIC,
        class_ids: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        progress: bool = True,
        init_pair: LabeledImage | None = None,
    ) -> TunedPrompt:
        """Learn the prompt.

        Args:
            pairs: labelled images ``(uint8 [H, W, 3] RGB, int [H, W] ids)``, any sizes;
                0 = background.
            val_pairs: held-out pairs for validation and early stopping (default:
                ``config.val_fraction`` of ``pairs``, or none).
            seg_type: semantic or instance (:meth:`SegType.parse`).
            class_ids: the class ids, in palette order (default: every nonzero id found in
                ``pairs`` except ``ignore_index``, sorted). Other ids count as background.
            class_names: one name per class (default ``class_<id>``).
            progress: show a progress bar.
            init_pair: with ``init="pair"``, start from this pair (e.g. the best single example
                pair, chosen elsewhere) instead of ``pairs[init_index]``.

        Returns:
            The :class:`TunedPrompt` (best validated prompt when validating, else the last one).
        """
        pairs = _checked_pairs(pairs)
        pairs, val_pairs = self._split_validation(pairs, val_pairs)
        ids, names = _classes(pairs, class_ids, class_names, self.config.ignore_index)
        palette = make_palette(getattr(self.model, "palette", "seggpt"), len(ids))
        pairs, init_pair = self._shrunk(pairs, init_pair)
        snapshot = self._initial_snapshot(pairs, ids, names, palette, seg_type, init_pair)
        precision = resolve_precision(self.config.precision, self.device)
        t0 = time.perf_counter()
        run = self._train(pairs, val_pairs, snapshot, precision, progress)
        image, mask = self._result_prompt(run, val_pairs)
        summary = self._summary(run, len(pairs), len(val_pairs), t0, precision)
        return dataclasses.replace(snapshot, image=image, mask=mask, summary=summary)

    def _split_validation(self, pairs: list[LabeledImage],
                          val_pairs: Sequence[LabeledImage] | None
                          ) -> tuple[list[LabeledImage], list[LabeledImage]]:
        """``(training pairs, validation pairs)``: ``val_pairs`` when given, else
        ``config.val_fraction`` of ``pairs`` held out (with >= 3 pairs), else none."""
        cfg = self.config
        if val_pairs is None and cfg.val_fraction > 0 and len(pairs) >= 3:
            tr, va = split_pairs(len(pairs), cfg.val_fraction, cfg.seed)
            pairs, val_pairs = [pairs[i] for i in tr], [pairs[i] for i in va]
        return pairs, list(val_pairs or [])

    def _shrunk(self, pairs: Sequence[LabeledImage], init_pair: LabeledImage | None
                ) -> tuple[list[LabeledImage], LabeledImage | None]:
        """The training pairs and ``init_pair`` (checked first) downscaled to a short side of at
        most twice the prompt half's longer side."""
        side = 2 * max(self.half_size)
        pairs = [_shrink(p, side) for p in pairs]
        if init_pair is not None:
            init_pair = _shrink(_checked_pairs([init_pair])[0], side)
        return pairs, init_pair

    def _initial_snapshot(self, pairs: Sequence[LabeledImage], ids: list[int], names: list[str],
                          palette: np.ndarray, seg_type: SegType | str | int,
                          init_pair: LabeledImage | None) -> TunedPrompt:
        """The :class:`TunedPrompt` of the initial prompt (:meth:`initial_prompt`) with the
        classes, the model's name and its weights' fingerprint."""
        img0, mask0 = self.initial_prompt(pairs, ids, palette, init_pair)
        return TunedPrompt(img0.clone(), mask0.clone(), palette, ids, names, seg_type,
                           str(getattr(self.model, "config_name", type(self.model).__name__)),
                           weights_fingerprint(self.model))

    def _result_prompt(self, run: _Progress, val_pairs: Sequence[LabeledImage]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt to return, each ``[3, h, w]`` on CPU: the best validated one when
        validating, else a copy of the last one."""
        if val_pairs:
            return run.best
        return self.image.detach()[0].cpu().clone(), self.mask.detach()[0].cpu().clone()

    def _summary(self, run: _Progress, num_train: int, num_val: int, t0: float,
                 precision: str) -> dict[str, Any]:
        """The run's summary stored in the :class:`TunedPrompt` (``t0``: start time of the
        training, :func:`time.perf_counter`)."""
        cfg = self.config
        return {
            "steps": sum(1 for r in self.history if "loss" in r), "max_steps": cfg.steps,
            "stopped_early": run.stopped_early, "final_loss": run.last_loss,
            "train_pairs": num_train, "val_pairs": num_val,
            "best_val_miou": run.best_miou if num_val else None,
            "best_step": run.best_step if num_val else None,
            "seconds": round(time.perf_counter() - t0, 2), "device": str(self.device),
            "precision": precision, "config": cfg.to_dict(),
        }

    def _optimizer(self, img0: torch.Tensor, mask0: torch.Tensor
                   ) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer, Any]:
        """Fresh parameters ``image`` / ``mask`` ``[1, 3, h, w]`` from the initial prompt, the
        optimiser over the trainable ones and its warm-up + cosine schedule."""
        cfg, device = self.config, self.device
        # copies: on CPU .to() would alias img0 / mask0, which must stay the initial prompt
        self.image = torch.nn.Parameter(img0[None].clone().to(device),
                                        requires_grad=cfg.train_image)
        self.mask = torch.nn.Parameter(mask0[None].clone().to(device), requires_grad=cfg.train_mask)
        params = [p for p in (self.image, self.mask) if p.requires_grad]
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        # eps far below the default 1e-8: a prompt pixel's gradient is tiny (the loss is a mean over
        # ~1e5 pixels, divided by beta), about 1e-11 for a small model, and the default eps would
        # swallow it
        opt = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-15)
        self._anchors = [(p, p.detach().clone()) for p in params]  # the start, for cfg.anchor
        return params, opt, build_scheduler(opt, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)

    def _train(self, pairs: list[LabeledImage], val_pairs: list[LabeledImage],
               snapshot: TunedPrompt, precision: str, progress: bool) -> _Progress:
        """The optimisation loop (model frozen), validating every ``val_every`` steps."""
        cfg = self.config
        snapshot_init = (snapshot.image.clone(), snapshot.mask.clone())  # validate() overwrites it
        params, opt, sched = self._optimizer(*snapshot_init)
        validate = _Validator(self.model, snapshot, val_pairs, precision, cfg.ignore_index, cfg.refine)
        # the valid pixel range [0, 1] in normalised space
        lo = normalize_tensor(torch.zeros(1, 3, 1, 1, device=self.device))
        hi = normalize_tensor(torch.ones(1, 3, 1, 1, device=self.device))
        rng, order, run = np.random.default_rng(cfg.seed), [], _Progress()
        self.history = []
        bar = tqdm(total=cfg.steps, desc="tune prompt", unit="step", disable=not progress)
        with frozen(self.model):
            if val_pairs:
                run.start(validate(self.image, self.mask), snapshot_init[0], snapshot_init[1])
                self.history.append({"step": 0, "val_miou": run.best_miou})
            for step in range(1, cfg.steps + 1):
                while len(order) < cfg.batch_size:  # epochs of shuffled pairs
                    order += rng.permutation(len(pairs)).tolist()
                idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
                batch = self._batch(rng, pairs, idx, snapshot.class_ids, snapshot.palette)
                run.last_loss = self._step(opt, sched, batch, snapshot.seg_type, precision,
                                           snapshot.palette)
                if cfg.clamp:
                    with torch.no_grad():
                        for p in params:
                            p.copy_(torch.maximum(torch.minimum(p, hi), lo))
                self.history.append({"step": step, "loss": run.last_loss,
                                     "lr": opt.param_groups[0]["lr"]})
                postfix = {"loss": f"{run.last_loss:.4g}"}
                if val_pairs and (step % cfg.val_every == 0 or step == cfg.steps):
                    miou = validate(self.image, self.mask)
                    self.history.append({"step": step, "val_miou": miou})
                    run.validated(miou, step, self.image, self.mask)
                    postfix["val_mIoU"] = f"{miou:.3f}"
                    run.stopped_early = bool(cfg.patience) and run.bad >= cfg.patience
                bar.update()
                bar.set_postfix(postfix)
                if run.stopped_early:
                    break
        bar.close()
        return run

    def _step(self, opt: torch.optim.Optimizer, sched: Any,
              batch: tuple[torch.Tensor, ...], seg_type: int, precision: str,
              palette: np.ndarray | None = None) -> float:
        """One optimiser and schedule step on a batch; returns the loss."""
        q, truth, valid, labels = (t.to(self.device) for t in batch)
        opt.zero_grad(set_to_none=True)
        loss = self.loss(q, truth, valid, int(seg_type), precision, labels, palette)
        if self.config.anchor > 0:
            loss = loss + self.anchor_penalty()
        loss.backward()
        opt.step()
        sched.step()
        return float(loss.detach())
