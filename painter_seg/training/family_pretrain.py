"""Shape-family pretraining of the encoder's first blocks (docs/training "Stage 13", part A).

A multi-class episode of the generator is decided by the shape family alone, and a linear probe finds no family in
the shipped model's tokens (:mod:`painter_seg.evaluation.probe`). Next to the painting loss an auxiliary family
loss moves too little in a CPU session, so this job trains the families first and alone: the blocks up to
``layer`` (the rest of the network is not run, which makes a step about 3x cheaper than a painting step) read
generated multi-class / semantic canvases laid out as at inference (the prompt pair over the query, the query's
mask hidden) and a linear head classifies each family's region of each half from the layer's pooled tokens
(:func:`painter_seg.model.loss.object_family_cross_entropy`). The full model is written out for a painting stage
to start from (``init_checkpoint``); the head is kept only in ``last.pt`` (for resuming).

Episode seeds are ``seed_base + step * batch_size + i``: a resumed run sees the samples an uninterrupted one would.
"""
from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import save_checkpoint
from ..errors import InputError
from ..evaluation.probe import episode_canvas
from ..io.files import atomic_path
from ..model.loss import object_family_cross_entropy
from ..utils.runtime import autocast, resolve_precision

LOG_FIELDS = ("step", "seconds", "loss")


@dataclass
class FamilyPretrainConfig:
    """Settings of :func:`pretrain_families` (defaults: stage 13's part A)."""

    layer: int = 5  # the block whose tokens are pooled (one of the model's feature_layers); later blocks are not run
    lr: float = 1e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    batch_size: int = 16
    grad_clip: float = 1.0
    max_steps: int = 100_000
    max_minutes: float | None = 45.0
    seed_base: int = 30_000_000  # episode seeds: far below the held-out range (2**31)
    save_every: int = 500
    log_every: int = 50
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_steps < 1:
            raise InputError(f"batch_size ({self.batch_size}) and max_steps ({self.max_steps}) must be >= 1")
        if self.lr <= 0 or self.head_lr <= 0:
            raise InputError(f"lr ({self.lr}) and head_lr ({self.head_lr}) must be > 0")


def family_batch(model, seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canvases of generated multi-class / semantic episodes (alternating) and their family maps.

    Returns:
        ``imgs``, ``tgts`` ``[N, 3, 2h, w]`` (the prompt pair over the query, as at inference) and ``family``
        ``[N, 2h, w]`` uint8 (1 + the family index, 0 background, 255 strokes).
    """
    from ..data.synthetic import generate_episode

    h, w = model.half_size
    imgs, tgts, fams = [], [], []
    for seed in seeds:
        ep = generate_episode(int(seed), kind=("multiclass", "semantic")[int(seed) % 2], size=(h, w))
        im, tg = episode_canvas(model, ep)
        imgs.append(im)
        tgts.append(tg)
        fams.append(torch.from_numpy(np.concatenate(ep.meta["family_maps"], 0)))
    return torch.cat(imgs), torch.cat(tgts), torch.stack(fams)


class _Truncated:
    """Runs ``model.forward_features`` with only the blocks up to ``layer`` (the modules are shared, not copied)."""

    def __init__(self, model, layer: int):
        self.model, self.full = model, model.blocks
        self.blocks = nn.ModuleList(list(model.blocks)[: layer + 1])
        self.index = [b for b in model.feature_layers if b <= layer].index(layer)

    def __call__(self, *args) -> torch.Tensor:
        self.model.blocks = self.blocks
        try:
            return self.model.forward_features(*args)[self.index]
        finally:
            self.model.blocks = self.full


def pretrain_families(model, cfg: FamilyPretrainConfig, output_dir: str | Path, resume: bool = False,
                      progress: bool = True) -> dict:
    """Train ``model``'s blocks up to ``cfg.layer`` on the object-pooled family loss; see the module docstring.

    Writes ``output_dir``/``model.safetensors`` (the full model), ``last.pt`` (model, head, optimizer, step: resume
    with ``resume=True``: the same episodes follow) and ``family_log.csv``.

    Returns:
        ``{"step", "seconds", "loss"}`` (loss: the mean over the last ``log_every`` steps).
    """
    from tqdm import tqdm

    from ..data.synthetic import FAMILIES

    if cfg.layer not in model.feature_layers:
        raise InputError(f"layer={cfg.layer}: expected one of the model's feature_layers {list(model.feature_layers)}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    precision = resolve_precision(cfg.precision, device)
    trunk = _Truncated(model, cfg.layer)
    params = [p for n, p in model.named_parameters() if not n.startswith("blocks.")
              or int(n.split(".")[1]) <= cfg.layer]
    head = nn.Linear(model.embed_dim, 1 + len(FAMILIES)).to(device)
    opt = torch.optim.AdamW([{"params": params, "lr": cfg.lr}, {"params": head.parameters(), "lr": cfg.head_lr}],
                            weight_decay=cfg.weight_decay)
    step, spent = 0, 0.0
    last = out / "last.pt"
    if resume:
        if not last.is_file():
            raise InputError(f"{last}: no checkpoint to resume from")
        state = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        step, spent = int(state["step"]), float(state["seconds"])
    log_path = out / "family_log.csv"
    if not resume or not log_path.is_file():
        with atomic_path(log_path) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerow(LOG_FIELDS)

    def save() -> None:
        save_checkpoint(model.state_dict(), out / "model.safetensors",
                        metadata={"family_pretrain": str(asdict(cfg)), "step": str(step)})
        with atomic_path(last) as tmp:
            torch.save({"model": model.state_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
                        "step": step, "seconds": spent}, tmp)

    model.train()
    qmask = model.query_mask(device)
    t0, window, mean = time.time(), [], float("nan")
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, desc="family pretrain")
    while step < cfg.max_steps and (cfg.max_minutes is None or spent + time.time() - t0 < 60 * cfg.max_minutes):
        seeds = [cfg.seed_base + step * cfg.batch_size + i for i in range(cfg.batch_size)]
        imgs, tgts, fam = (t.to(device) for t in family_batch(model, seeds))
        with autocast(device, precision):
            feats = trunk(imgs, tgts, qmask, torch.zeros(len(seeds), device=device))
        loss = object_family_cross_entropy(head(feats.float()), fam, model.patch_size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        window.append(loss.item())
        bar.update(1)
        if step % cfg.log_every == 0:
            mean = float(np.mean(window))
            window = []
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([step, f"{spent + time.time() - t0:.1f}", f"{mean:.5f}"])
            bar.set_postfix(loss=f"{mean:.3f}")
        if step % cfg.save_every == 0:
            spent, t0 = spent + time.time() - t0, time.time()
            save()
    bar.close()
    spent += time.time() - t0
    save()
    return {"step": step, "seconds": spent, "loss": mean if not window else float(np.mean(window))}


__all__ = ("FamilyPretrainConfig", "family_batch", "pretrain_families")
