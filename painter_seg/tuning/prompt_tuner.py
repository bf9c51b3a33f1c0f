"""Prompt tuning (SegGPT paper §4.2, "in-context tuning"): learn a prompt pair for a frozen model.

The model is frozen; the only trainable tensors are a prompt image and a prompt mask of the model's
prompt-half size. They are learned from labelled images of one scene or one fixed set of classes with the
training loss of SegGPT (masked smooth-L1 on the query half), then used like an example pair
(:class:`~painter_seg.strategies.TunedPromptStrategy`). Several classes are taught at once: class k of the
masks is painted in colour k of the fixed palette (:func:`~painter_seg.codec.palette.build_palette`).

    tuner = PromptTuner(model, TuneConfig(steps=300, init="mean"))
    prompt = tuner.fit(pairs)            # [(uint8 RGB [H, W, 3], int ids [H, W]), ...]
    prompt.save("scene.safetensors")
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..apps.few_shot import FewShotSegmenter
from ..checkpoint import weights_fingerprint
from ..codec.canvas import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize,
    resize_color_mask,
    resize_image,
    resize_labels,
)
from ..codec.palette import build_palette, labels_to_colors
from ..data.in_context import InContextRecipe, augment_view
from ..errors import InputError
from ..evaluation.miou import FewShotMeter
from ..model import SegGPT
from ..model.loss import masked_smooth_l1
from ..strategies import TunedPrompt, TunedPromptStrategy
from ..utils.runtime import autocast, resolve_precision

LabeledImage = tuple[np.ndarray, np.ndarray]  # (uint8 [H, W, 3] RGB, int [H, W] ids)

INITS = ("pair", "mean", "random")
OPTIMIZERS = ("adam", "adamw")

# Paired augmentation for one scene: milder crops than training (the scene's layout is the signal), no
# mix-context, no label subsets.
TUNE_RECIPE = InContextRecipe(scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), hflip_p=0.5, jitter_p=0.5,
                              brightness=0.3, contrast=0.3, saturation=0.3, mix_context_p=0.0,
                              same_image_p=0.0, label_subset_p=0.0)


@dataclass
class TuneConfig:
    """Knobs of :class:`PromptTuner`.

    Attributes:
        steps: optimiser steps (at most; early stopping may end sooner).
        batch_size: (image, mask) pairs per step, each one query under the same prompt.
        lr: peak learning rate. The prompt lives in ImageNet-normalised pixel space (about -2..2.6), so a
            step moves each pixel by about ``lr``.
        optimizer: ``adamw`` or ``adam``; weight_decay: AdamW decay (pulls the prompt towards grey).
        warmup_steps: linear warm-up, then cosine decay to ``min_lr_ratio * lr``.
        beta: smooth-L1 transition point. The official SegGPT uses 0.01 (~L1); for our small models
            trained from scratch the L1-like loss settles on painting everything background, while an
            L2-like loss (large beta) keeps the gradient proportional to the error: 100 by default. With
            the official ViT-L weights 0.01 works too.
        init: ``pair`` (the training pair ``init_index``), ``mean`` (the mean of the training pairs, images
            and colour masks) or ``random`` (uniform pixels).
        init_index: which training pair ``init="pair"`` starts from.
        train_image / train_mask: which of the two prompt tensors learn.
        clamp: keep the prompt inside the valid pixel range [0, 1] after each step (a real image).
        augment: paired augmentation of the training pairs (crop, flip, colour jitter), or None.
        val_fraction: share of the pairs held out for validation when no validation pairs are given
            (only with >= 3 pairs; at least one pair stays for training). 0 = no validation.
        val_every: steps between validations (mIoU of the current prompt on the validation pairs).
        patience: validations without improvement before stopping (0 = never stop early). With
            validation, the best prompt seen is the one returned.
        precision: ``auto`` (bf16 autocast on CUDA with bf16 support, else fp32), ``fp32``, ``bf16``.
        ignore_index: mask id that is neither background nor a class (no loss there), or None.
        max_pairs_init: at most this many pairs are averaged for ``init="mean"``.
        seed: drives the batch order, augmentation, validation split and random init.
    """

    steps: int = 300
    batch_size: int = 4
    lr: float = 0.05
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    beta: float = 100.0
    init: str = "mean"
    init_index: int = 0
    train_image: bool = True
    train_mask: bool = True
    clamp: bool = True
    augment: InContextRecipe | None = field(default_factory=lambda: dataclasses.replace(TUNE_RECIPE))
    val_fraction: float = 0.0
    val_every: int = 25
    patience: int = 4
    precision: str = "auto"
    ignore_index: int | None = 255
    max_pairs_init: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise InputError(f"steps={self.steps}, batch_size={self.batch_size}: both must be >= 1")
        if self.init not in INITS:
            raise InputError(f"init={self.init}: expected one of {', '.join(INITS)}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer={self.optimizer}: expected one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0 or not self.beta > 0:
            raise InputError(f"lr={self.lr}, beta={self.beta}: both must be > 0")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction={self.val_fraction}: expected 0 <= val_fraction < 1")
        if self.val_every < 1 or self.patience < 0:
            raise InputError(f"val_every={self.val_every}, patience={self.patience}: expected >= 1, >= 0")
        if not (self.train_image or self.train_mask):
            raise InputError("train_image and train_mask are both false: nothing to tune")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> TuneConfig:
        """A config from a mapping of field values (unknown keys are an error); ``augment`` may be a
        mapping of :class:`InContextRecipe` fields over the tuning defaults, or null / false for none."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise InputError(f"unknown tuning keys {unknown}; known: {', '.join(sorted(names))}")
        vals = dict(cfg)
        if "augment" in vals:
            aug = vals["augment"]
            vals["augment"] = (None if aug in (None, False) else
                               InContextRecipe.from_dict(dict(aug) if aug is not True else {}, TUNE_RECIPE))
        return cls(**vals)


def split_pairs(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, held_out)`` of a seeded random split of n items: ``round(fraction * n)`` held out,
    at least one on each side when ``fraction > 0`` and n >= 2; ``fraction = 0`` holds out nothing."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    if fraction <= 0 or n < 2:
        return sorted(order), []
    k = min(n - 1, max(1, round(fraction * n)))
    return sorted(order[k:]), sorted(order[:k])


def score_pairs(segmenter: FewShotSegmenter, pairs: Sequence[LabeledImage],
                ignore_index: int | None = 255) -> dict[str, Any]:
    """mIoU of a prompted segmenter over labelled images, at the images' own size.

    Every class id of the segmenter's prompt is scored on every image as a binary (pred == id, gt == id)
    pair (so false positives on images without the class count); intersections and unions are summed per
    class over the images (:class:`~painter_seg.evaluation.miou.FewShotMeter`) and mIoU is the mean over
    the classes.

    Returns:
        ``{"mIoU": float, "per_class": {id: IoU}, "images": n}``.
    """
    if not segmenter.is_prompt_set:
        raise RuntimeError("score_pairs: the segmenter has no prompt")
    meter = FewShotMeter(ignore_index=ignore_index)
    ids = [int(i) for i in segmenter.ids]
    for (img, gt), pred in zip(pairs, segmenter.predict_batch([p[0] for p in pairs])):
        gt = np.asarray(gt)
        for j in ids:
            g = gt == j if ignore_index is None else np.where(gt == ignore_index, ignore_index, gt == j)
            meter.update(str(j), (pred.labels == j).astype(np.int64), g.astype(np.int64))
    per_class = {int(k): v for k, v in meter.class_iou().items()}
    return {"mIoU": meter.miou(), "per_class": per_class, "images": len(pairs)}


def _shrink(pair: LabeledImage, short_side: int) -> LabeledImage:
    """Downscale a pair so that its shorter side is at most ``short_side`` (augmentation stays cheap)."""
    img, lab = np.asarray(pair[0]), np.asarray(pair[1])
    h, w = lab.shape
    if min(h, w) <= short_side:
        return img, lab
    s = short_side / min(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA), resize_labels(lab, size)


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``requires_grad_(False)`` and eval mode inside the block; each parameter's flag and the mode are put
    back afterwards."""
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


def _lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class PromptTuner:
    """Learn a prompt pair for a frozen :class:`SegGPT` from labelled images of one scene.

    Args:
        model: the network. It is frozen during :meth:`fit` (``requires_grad_(False)``, eval mode) and
            put back as it was afterwards; its weights are never written.
        config: :class:`TuneConfig` (defaults if None).

    After :meth:`fit`, ``image`` / ``mask`` are the learned ``[1, 3, h, w]`` parameters and ``history``
    holds ``{"step", "loss", "lr"}`` per step and ``{"step", "val_miou"}`` per validation.
    """

    def __init__(self, model: SegGPT, config: TuneConfig | None = None) -> None:
        self.model = model
        self.config = config or TuneConfig()
        self.image: torch.nn.Parameter | None = None
        self.mask: torch.nn.Parameter | None = None
        self.history: list[dict[str, float]] = []

    @property
    def half_size(self) -> tuple[int, int]:
        return self.model.half_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ prompt encoding
    def _colors(self, labels: np.ndarray, lut: np.ndarray, palette: np.ndarray) -> np.ndarray:
        """``[h, w]`` ids -> ``[h, w, 3]`` float in [0, 1], class k in palette colour k."""
        return labels_to_colors(lut[np.clip(labels, 0, len(lut) - 1)], palette).astype(np.float32) / 255.0

    def initial_prompt(self, pairs: Sequence[LabeledImage], lut: np.ndarray, palette: np.ndarray,
                       init_pair: LabeledImage | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting prompt ``(image, mask)``, each ``[3, h, w]`` normalised (see ``TuneConfig.init``;
        ``init_pair`` replaces ``pairs[init_index]`` for ``init="pair"``)."""
        cfg, (h, w) = self.config, self.half_size
        if cfg.init == "random":
            g = torch.Generator().manual_seed(cfg.seed)
            rgb = torch.rand(2, h, w, 3, generator=g).numpy()
            img, mask = normalize(rgb[0]), normalize(rgb[1])
        else:
            if cfg.init == "pair" and init_pair is not None:
                chosen = [init_pair]
            elif cfg.init == "pair":
                if not 0 <= cfg.init_index < len(pairs):
                    raise InputError(f"init_index={cfg.init_index}: expected 0..{len(pairs) - 1} (the "
                                     "training pairs)")
                chosen = [pairs[cfg.init_index]]
            else:
                chosen = list(pairs[: cfg.max_pairs_init])
            imgs = [resize_image(np.asarray(p[0]), (h, w)) for p in chosen]
            masks = [resize_color_mask(labels_to_colors(lut[np.asarray(p[1]).clip(0, len(lut) - 1)],
                                                        palette), (h, w)) for p in chosen]
            img, mask = normalize(np.mean(imgs, axis=0)), normalize(np.mean(masks, axis=0))
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()
        return to_t(img), to_t(mask)

    def _batch(self, rng: np.random.Generator, pairs: Sequence[LabeledImage], idx: Sequence[int],
               lut: np.ndarray, palette: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries ``[B, 3, h, w]``, their true colour masks ``[B, 3, h, w]`` (both normalised) and the
        loss weight ``[B, 1, h, w]`` (0 on ``ignore_index``)."""
        cfg, size = self.config, self.half_size
        imgs, cols, valid = [], [], []
        for i in idx:
            img, lab = pairs[i]
            if cfg.augment is not None:
                x, lab = augment_view(rng, (img, lab), size, cfg.augment)
                x = x.transpose(1, 2, 0)
            else:
                x, lab = resize_image(img, size), resize_labels(lab, size)
            imgs.append(normalize(x))
            cols.append(normalize(self._colors(lab, lut, palette)))
            ok = np.ones(lab.shape, np.float32) if cfg.ignore_index is None else \
                (lab != cfg.ignore_index).astype(np.float32)
            valid.append(ok[..., None])
        to_t = lambda a: torch.from_numpy(np.stack(a).transpose(0, 3, 1, 2)).float()
        return to_t(imgs), to_t(cols), to_t(valid)

    # ------------------------------------------------------------------ training
    def loss(self, queries: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor, seg_type: int,
             precision: str = "fp32") -> torch.Tensor:
        """Masked smooth-L1 of the model painting ``queries`` under the current prompt (differentiable in
        the prompt). Inputs as returned by the batch builder, on the model's device."""
        assert self.image is not None and self.mask is not None
        b = queries.shape[0]
        top_img, top_mask = self.image.expand(b, -1, -1, -1), self.mask.expand(b, -1, -1, -1)
        imgs = torch.cat([top_img, queries], dim=2)
        tgts = torch.cat([top_mask, top_mask], dim=2)  # official: the query half repeats the prompt mask
        qmask = self.model.query_mask(queries.device)
        st = torch.full((b,), seg_type, device=queries.device)
        with autocast(queries.device, precision):
            pred = self.model(imgs, tgts, qmask, st)
        target = torch.cat([torch.zeros_like(truth), truth], dim=2)  # only the query half is scored
        weight = torch.cat([torch.ones_like(valid), valid], dim=2)
        return masked_smooth_l1(pred.float(), target, qmask, self.model.patch_size, weight,
                                beta=self.config.beta)

    def fit(
        self,
        pairs: Sequence[LabeledImage],
        val_pairs: Sequence[LabeledImage] | None = None,
        *,
        seg_type: int = 0,
        class_ids: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        progress: bool = True,
        init_pair: LabeledImage | None = None,
    ) -> TunedPrompt:
        """Learn the prompt.

        Args:
            pairs: labelled images ``(uint8 [H, W, 3] RGB, int [H, W] ids)``, any sizes; 0 = background.
            val_pairs: held-out pairs for validation and early stopping (default: ``config.val_fraction``
                of ``pairs``, or none).
            seg_type: 0 semantic, 1 instance.
            class_ids: the class ids, in palette order (default: every nonzero id found in ``pairs``
                except ``ignore_index``, sorted). Other ids count as background.
            class_names: one name per class (default ``class_<id>``).
            progress: show a progress bar.
            init_pair: with ``init="pair"``, start from this pair (e.g. the best single example pair,
                chosen elsewhere) instead of ``pairs[init_index]``.

        Returns:
            The :class:`TunedPrompt` (best validated prompt when validating, else the last one).
        """
        cfg = self.config
        pairs = [(np.asarray(i), np.asarray(m, dtype=np.int64)) for i, m in pairs]
        if not pairs:
            raise InputError("prompt tuning needs at least one labelled image")
        for k, (img, lab) in enumerate(pairs):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.shape[:2] != lab.shape:
                raise InputError(f"pair {k}: expected a uint8 [H, W, 3] image and an [H, W] mask of the same "
                                 f"size, got {img.shape} {img.dtype} and {lab.shape}")
        if val_pairs is None and cfg.val_fraction > 0 and len(pairs) >= 3:
            tr, va = split_pairs(len(pairs), cfg.val_fraction, cfg.seed)
            pairs, val_pairs = [pairs[i] for i in tr], [pairs[i] for i in va]
        val_pairs = list(val_pairs or [])
        if class_ids is None:
            found = np.unique(np.concatenate([np.unique(lab) for _, lab in pairs]))
            class_ids = [int(i) for i in found if i != 0 and i != cfg.ignore_index]
        class_ids = [int(i) for i in class_ids]
        if not class_ids:
            raise InputError("the training masks hold no class (every pixel is background)")
        if min(class_ids) < 1 or max(class_ids) > 255 or len(set(class_ids)) != len(class_ids):
            raise InputError(f"class ids must be distinct and in 1..255, got {class_ids}")
        names = [f"class_{i}" for i in class_ids] if class_names is None else [str(n) for n in class_names]
        if len(names) != len(class_ids):
            raise InputError(f"{len(names)} class names for {len(class_ids)} classes {class_ids}")
        palette = build_palette(len(class_ids))
        lut = np.zeros(256, np.int64)
        lut[class_ids] = np.arange(1, len(class_ids) + 1)

        device = self.device
        precision = resolve_precision(cfg.precision, device)
        h, w = self.half_size
        pairs = [_shrink(p, 2 * max(h, w)) for p in pairs]
        if init_pair is not None:
            init_pair = _shrink((np.asarray(init_pair[0]), np.asarray(init_pair[1], dtype=np.int64)),
                                2 * max(h, w))
        img0, mask0 = self.initial_prompt(pairs, lut, palette, init_pair)
        # copies: on CPU .to() would alias img0 / mask0, which must stay the untouched initial prompt
        self.image = torch.nn.Parameter(img0[None].clone().to(device), requires_grad=cfg.train_image)
        self.mask = torch.nn.Parameter(mask0[None].clone().to(device), requires_grad=cfg.train_mask)
        params = [p for p in (self.image, self.mask) if p.requires_grad]
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        # eps far below the default 1e-8: a prompt pixel's gradient is tiny (the loss is a mean over ~1e5
        # pixels, divided by beta), about 1e-11 for a small model, and the default eps would swallow it
        opt = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-15)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: _lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        lo, hi = (0 - mean) / std, (1 - mean) / std

        snapshot = TunedPrompt(img0.clone(), mask0.clone(), palette, class_ids, names, int(seg_type),
                               str(getattr(self.model, "config_name", type(self.model).__name__)),
                               weights_fingerprint(self.model))
        validator = FewShotSegmenter(self.model, TunedPromptStrategy(self.model), precision=precision)

        def validate() -> float:
            snapshot.image.copy_(self.image.detach()[0].cpu())
            snapshot.mask.copy_(self.mask.detach()[0].cpu())
            validator.set_tuned_prompt(snapshot, check=False)
            return float(score_pairs(validator, val_pairs, cfg.ignore_index)["mIoU"])

        rng = np.random.default_rng(cfg.seed)
        order: list[int] = []
        self.history = []
        best = (-1.0, -1, img0, mask0)  # (val mIoU, step, image, mask); step 0 = the initial prompt
        bad, stopped_early, last_loss = 0, False, float("nan")
        t0 = time.perf_counter()
        bar = tqdm(range(cfg.steps), desc="tune prompt", unit="step", disable=not progress)
        with frozen(self.model):
            if val_pairs:
                best = (validate(), 0, img0, mask0)
                self.history.append({"step": 0, "val_miou": best[0]})
            for step in bar:
                while len(order) < cfg.batch_size:  # epochs of shuffled pairs
                    order += rng.permutation(len(pairs)).tolist()
                idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
                q, truth, valid = (t.to(device) for t in self._batch(rng, pairs, idx, lut, palette))
                opt.zero_grad(set_to_none=True)
                loss = self.loss(q, truth, valid, int(seg_type), precision)
                loss.backward()
                opt.step()
                sched.step()
                if cfg.clamp:
                    with torch.no_grad():
                        for p in params:
                            p.copy_(torch.maximum(torch.minimum(p, hi), lo))
                last_loss = float(loss.detach())
                self.history.append({"step": step + 1, "loss": last_loss, "lr": opt.param_groups[0]["lr"]})
                postfix = {"loss": f"{last_loss:.4g}"}
                if val_pairs and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
                    miou = validate()
                    self.history.append({"step": step + 1, "val_miou": miou})
                    if miou > best[0] + 1e-4:
                        best = (miou, step + 1, self.image.detach()[0].cpu().clone(),
                                self.mask.detach()[0].cpu().clone())
                        bad = 0
                    else:
                        bad += 1
                    postfix["val_mIoU"] = f"{miou:.3f}"
                    if cfg.patience and bad >= cfg.patience:
                        stopped_early = True
                        bar.set_postfix(postfix)
                        break
                bar.set_postfix(postfix)
        bar.close()
        seconds = time.perf_counter() - t0
        steps_run = sum(1 for r in self.history if "loss" in r)
        if val_pairs:
            image, mask = best[2], best[3]
        else:
            image, mask = self.image.detach()[0].cpu().clone(), self.mask.detach()[0].cpu().clone()
        summary = {
            "steps": steps_run, "max_steps": cfg.steps, "stopped_early": stopped_early,
            "final_loss": last_loss, "train_pairs": len(pairs), "val_pairs": len(val_pairs),
            "best_val_miou": best[0] if val_pairs else None, "best_step": best[1] if val_pairs else None,
            "seconds": round(seconds, 2), "device": str(device), "precision": precision,
            "config": {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                       for k, v in ((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg))},
        }
        return TunedPrompt(image, mask, palette, class_ids, names, int(seg_type), snapshot.model_name,
                           snapshot.fingerprint, summary)
