"""The training loop: SegGPT masked painting on in-context canvases, resumable to the step.

``train(cfg)`` (config: ``conf/train.yaml``, typed by :mod:`painter_seg.training.config`) builds the
model with :func:`painter_seg.build.build_model` (random init, or ``init_checkpoint`` to fine-tune,
e.g. the official ViT-L), the dataset from ``cfg.data``
(:func:`painter_seg.data.in_context.build_train_dataset`, visited by
:class:`~painter_seg.training.loader.TrainLoader`), AdamW with optional layer-wise lr decay
(:mod:`painter_seg.training.optim`) and the warm-up + cosine schedule
(:mod:`painter_seg.utils.schedule`), and runs optimiser steps of the masked smooth-L1 loss with
Painter's masks (:mod:`painter_seg.training.masking`).

Outputs in ``cfg.output_dir`` (rank 0 only):

* ``train_log.csv`` (:mod:`painter_seg.training.logbook`) every ``log_every`` steps;
* ``last.pt``: everything needed to continue exactly (:mod:`painter_seg.training.state`), written
  atomically every ``save_every`` steps and at the end;
* ``model.safetensors``: the weights alone (:func:`painter_seg.checkpoint.save_checkpoint`),
  loadable with ``build_model(..., checkpoint=...)``;
* ``summary.json``: what happened (steps, stop reason, final loss, throughput, paths).

Distributed: under ``torchrun`` the process group is created
(:class:`painter_seg.utils.dist.ProcessGroup`), the model wrapped in DDP and the data sharded by rank.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..build import build_model
from ..checkpoint import save_checkpoint, weights_fingerprint
from ..data.in_context import build_train_dataset
from ..errors import InputError
from ..io.files import atomic_path
from ..model.loss import family_cross_entropy, masked_smooth_l1, object_family_cross_entropy
from ..utils.dist import ProcessGroup
from ..utils.runtime import autocast, resolve_precision
from ..utils.schedule import build_scheduler
from .config import TrainJobConfig, parse_config
from .loader import TrainLoader
from .logbook import CSV_FIELDS, LOG_NAME, CsvLog, RunStats
from .masking import sample_masks
from .optim import build_optimizer, prefix_scale
from .state import (
    CKPT_NAME,
    TrainState,
    read_checkpoint,
    resume_path,
    rng_state,
    seed_all,
    set_rng_state,
)
from .validation import VAL_LOG_NAME, Validator, ValLog

log = logging.getLogger(__name__)

__all__ = ["CSV_FIELDS", "Trainer", "train"]

WEIGHTS_NAME = "model.safetensors"
SUMMARY_NAME = "summary.json"


class Trainer:
    """One process's training: set up from a config, then :meth:`fit`.

    Args:
        cfg: the composed ``conf/train.yaml`` (checked by :func:`parse_config`) or a
            :class:`TrainJobConfig`.

    Attributes:
        job / tcfg: the typed config and its ``train`` group.
        group: process layout, device and collectives (:class:`ProcessGroup`).
        net: the bare network; ``model`` is what the loss calls (DDP-wrapped when distributed).
        data: the :class:`TrainLoader` (``dataset``, ``micro_per_epoch``, ``steps_per_epoch``).
        state: :class:`TrainState` (net, optimizer, scheduler, scaler, progress counters).
        precision: the autocast precision actually used (``auto`` resolved for the device).
        resumed_from: the ``last.pt`` this run continued, or None.
    """

    def __init__(self, cfg: DictConfig | TrainJobConfig) -> None:
        self.job = cfg if isinstance(cfg, TrainJobConfig) else parse_config(cfg)
        self.tcfg = self.job.train
        self.group = ProcessGroup(self.job.device)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up
    @property
    def device(self) -> torch.device:
        return self.group.device

    @property
    def is_main(self) -> bool:
        return self.group.info.is_main

    @property
    def world_size(self) -> int:
        return self.group.info.world_size

    @property
    def step(self) -> int:
        return self.state.progress.step

    @property
    def dataset(self) -> Any:
        return self.data.dataset

    def _setup(self) -> None:
        job, t = self.job, self.tcfg
        self.seed = int(job.seed)
        self.output_dir = Path(job.output_dir).expanduser()
        self.precision = resolve_precision(job.precision, self.device)
        self._build_model()
        seed_all(self.seed + 1000 * self.group.info.rank)  # per-rank stream (drop path) from here on
        self._build_data()
        self.max_steps = int(t.max_steps or 0) or int(t.epochs or 0) * self.data.steps_per_epoch
        self.global_batch = t.batch_size * t.accum_steps * self.world_size
        self._build_optimisation()
        self.resumed_from: str | None = None
        self._maybe_resume()
        self._build_validation()

    def _build_validation(self) -> None:
        """The ``data.val`` sets (rank 0 only; None when ``train.val_every`` is off or no set)."""
        self.validator: Validator | None = None
        self.last_val: dict[str, dict[str, float]] = {}
        val_cfg = self.job.data.get("val") if self.job.data is not None else None
        if self.is_main and self.tcfg.val_every and val_cfg:
            if isinstance(val_cfg, DictConfig):
                val_cfg = OmegaConf.to_container(val_cfg, resolve=True)
            self.validator = Validator(val_cfg, self.net.half_size, self.tcfg.val_batch_size)

    def _build_model(self) -> None:
        """The network, with identical init on every rank (DDP also broadcasts rank 0's weights)."""
        seed_all(self.seed)
        init = self.job.init_checkpoint
        self.net = build_model(
            self.job.model,
            checkpoint=str(init) if init else None,
            device=self.device,
            pretrained=False,
            strict=self.job.init_strict,
        )
        self.net.train()
        scales = dict(self.tcfg.lr_scales or {})
        for name, p in self.net.named_parameters():  # before DDP, which registers what needs gradients
            if prefix_scale(name, scales) == 0:
                p.requires_grad_(False)  # lr x 0: frozen (no gradient, outside the optimizer and the clip)
        self.model_name = str(self.job.model.get("name", "model"))
        self.model: nn.Module = self.net
        if self.group.info.distributed:
            self.model = DistributedDataParallel(
                self.net,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.tcfg.ddp_find_unused_parameters,
            )

    def _build_data(self) -> None:
        try:
            dataset = build_train_dataset(self.job.data, self.net.half_size, self.seed)
        except MissingMandatoryValue as e:
            raise InputError(
                f"missing required config value {e.full_key} (set it on the command line)"
            ) from e
        t = self.tcfg
        self.data = TrainLoader(
            dataset, t.batch_size, t.accum_steps, self.seed, self.group.info,
            num_workers=t.num_workers, pin_memory=self.device.type == "cuda",
        )

    def _build_optimisation(self) -> None:
        t = self.tcfg
        lr = t.lr * self.global_batch / t.lr_ref_batch if t.lr_ref_batch else t.lr
        self.base_lr = lr
        self._build_aux_head()
        scales = dict(t.lr_scales or {})
        optimizer = build_optimizer(
            self.net, lr, weight_decay=t.weight_decay, betas=tuple(t.betas), layer_decay=t.layer_decay,
            extra=self.aux_head, extra_lr_scale=t.aux_family_lr_scale, lr_scales=scales,
        )
        scheduler = build_scheduler(optimizer, t.warmup_steps, self.max_steps, t.min_lr_ratio)
        use_scaler = self.precision == "fp16" and self.device.type == "cuda"
        scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.state = TrainState(self.net, optimizer, scheduler, scaler, aux=self.aux_head)
        self.grad_clip = float(t.grad_clip or 0.0)

    def _build_aux_head(self) -> None:
        """The auxiliary shape-family head (``train.aux_family_weight`` > 0): a linear map from one block's
        features to background + the generator's shape families, trained on the generated samples that carry
        ``family`` targets. It teaches every token which family its object is, the cue multi-class episodes
        are decided by (docs/training "Stage 12"); training-only: the exported weights never hold it."""
        from ..data.synthetic import FAMILIES

        t = self.tcfg
        self.aux_head: nn.Module | None = None
        self.aux_index = 0
        self.aux_window: list[torch.Tensor] = []
        if t.aux_family_weight <= 0:
            return
        layers = list(self.net.feature_layers)
        layer = layers[1 if len(layers) > 1 else 0] if t.aux_family_layer is None else int(t.aux_family_layer)
        if layer not in layers:
            raise InputError(f"train.aux_family_layer={layer}: expected one of the model's feature_layers {layers}")
        self.aux_index = layers.index(layer)
        with torch.random.fork_rng(devices=[]):  # its own init stream: the global RNG stays as it was
            torch.manual_seed(self.seed + 7)
            self.aux_head = nn.Linear(self.net.embed_dim, 1 + len(FAMILIES)).to(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)

    # ------------------------------------------------------------------ checkpoints
    def _maybe_resume(self) -> None:
        path = resume_path(self.job.resume, self.output_dir)
        if path is None:
            return
        ckpt = read_checkpoint(path)
        self.state.load(ckpt, path)
        p, rank = self.state.progress, self.group.info.rank
        rngs = ckpt.get("rng") or []
        if int(ckpt.get("world_size", 1)) != self.world_size:
            log.warning(
                "%s was written by %s process(es), now %d: data order and RNG streams differ "
                "from an uninterrupted run",
                path, ckpt.get("world_size"), self.world_size,
            )
            p.batch_in_epoch = min(p.batch_in_epoch, self.data.micro_per_epoch)
        elif rank < len(rngs):
            set_rng_state(rngs[rank])
        p.roll_epoch(self.data.micro_per_epoch)
        self.resumed_from = str(path)
        if self.is_main:
            log.info("resumed from %s at step %d (epoch %d, batch %d)",
                     path, p.step, p.epoch, p.batch_in_epoch)

    def save(self) -> None:
        """Write ``last.pt`` and ``model.safetensors`` (rank 0; every rank must call it)."""
        rngs = self.group.gather(rng_state())
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            config = OmegaConf.to_yaml(OmegaConf.structured(self.job), resolve=True)
            ckpt = self.state.to_checkpoint(
                rngs, self.world_size, model_name=self.model_name, config=config
            )
            self.state.save(self.output_dir / CKPT_NAME, ckpt)
            net_cfg = OmegaConf.to_container(self.job.model.net, resolve=True)
            save_checkpoint(
                self.net.state_dict(),
                self.output_dir / WEIGHTS_NAME,
                metadata={"model": self.model_name, "step": str(self.step), "net": json.dumps(net_cfg)},
            )
        self.group.barrier()

    # ------------------------------------------------------------------ one step
    def masks_for(self, step: int, micro: int, n: int) -> torch.Tensor:
        """Patch masks ``[n, L]`` bool for micro-batch ``micro`` of step ``step`` on this rank."""
        rng = np.random.default_rng([self.seed, 1, step, self.group.info.rank, micro])
        t = self.tcfg
        m = sample_masks(
            rng,
            self.net.grid_size,
            n,
            t.p_half_mask,
            mask_ratio=t.mask_ratio,
            min_num_patches=t.min_mask_patches,
            max_num_patches=t.max_mask_patches,
        )
        return torch.from_numpy(m)

    def compute_loss(
        self, batch: dict[str, torch.Tensor], mask: torch.Tensor, model: nn.Module | None = None
    ) -> torch.Tensor:
        """Masked smooth-L1 of the model on one batch.

        Args:
            batch: dataset items collated: ``imgs`` / ``tgts`` ``[N, 3, 2H, W]`` float (normalised
                canvases), ``valid`` ``[N, 1, 2H, W]``, ``seg_type`` ``[N]`` int64; any device.
            mask: ``[N or 1, L]`` bool patch mask (True = hidden).
            model: the module to call (default: the training model, DDP-wrapped if distributed).

        Returns:
            The scalar loss (float32).
        """
        nb = self.device.type == "cuda"
        b = {k: v.to(self.device, non_blocking=nb) for k, v in batch.items()}
        mask = mask.to(self.device)
        aux = self.aux_head is not None and "family" in b
        with self.autocast():
            out = (model or self.model)(
                b["imgs"], b["tgts"], bool_masked_pos=mask, seg_type=b["seg_type"], return_features=aux
            )
            pred, feats = out if aux else (out, None)
            if aux:
                logits = self.aux_head(feats[self.aux_index])
        loss = masked_smooth_l1(
            pred.float(),
            b["tgts"],
            mask,
            self.net.patch_size,
            valid=b["valid"],
            beta=self.tcfg.loss_beta,
            fg_weight=self.tcfg.loss_fg_weight,
        )
        if aux:
            family_ce = object_family_cross_entropy if self.tcfg.aux_family_pool == "object" else family_cross_entropy
            ce = family_ce(logits, b["family"], self.net.patch_size)
            self.aux_window.append(ce.detach())
            loss = loss + self.tcfg.aux_family_weight * ce
        return loss

    def train_step(
        self, micro_batches: list[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step over ``accum_steps`` micro-batches; returns (mean loss, grad norm)."""
        s = self.state
        total = torch.zeros((), device=self.device)
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext()
            if self.group.info.distributed and not last:
                sync = self.model.no_sync()
            with sync:
                loss = self.compute_loss(batch, self.masks_for(self.step, j, batch["imgs"].shape[0]))
                s.scaler.scale(loss / len(micro_batches)).backward()
            total += loss.detach()
        if self.aux_head is not None and self.group.info.distributed:
            # the head is not DDP-wrapped: average its gradients here, on every rank every step (a rank whose
            # batch held no family targets adds zeros), so that it stays one head
            for prm in self.aux_head.parameters():
                prm.grad = self.group.mean(prm.grad if prm.grad is not None else torch.zeros_like(prm))
        s.scaler.unscale_(s.optimizer)
        params = list(self.net.parameters())
        if self.aux_head is not None:
            params += list(self.aux_head.parameters())
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else math.inf)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        s.scheduler.step()
        return total / len(micro_batches), norm.detach().float()

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (or ``stop_after_steps`` / ``max_minutes``); return a summary."""
        from tqdm.auto import tqdm

        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            log.info(
                "training %s on %s: %d process(es), global batch %d, %d steps/epoch, steps %d -> %d",
                self.model_name, self.device, self.world_size, self.global_batch,
                self.data.steps_per_epoch, self.step, self.max_steps,
            )
        keep = self.step if self.resumed_from else None
        fields = CSV_FIELDS + (("aux_family_loss",) if self.aux_head is not None else ())
        self.csv = CsvLog(self.output_dir / LOG_NAME, enabled=self.is_main, keep_until=keep, fields=fields)
        self.val_log = ValLog(self.output_dir / VAL_LOG_NAME,
                              enabled=self.validator is not None, keep_until=keep)
        run = RunStats(self.step, elapsed0=self.state.progress.elapsed_s)
        if not self.resumed_from:
            self.validate(run)
        bar = tqdm(total=self.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.is_main and self.tcfg.progress))
        stopped = "max_steps" if self.step >= self.max_steps else None
        while stopped is None:
            stopped = self._run_epoch(run, bar)
        bar.close()
        self.save()
        return self._finish(stopped, run)

    def _run_epoch(self, run: RunStats, bar: Any) -> str | None:
        """Steps to the end of the current epoch; returns why training stopped, or None."""
        p, t = self.state.progress, self.tcfg
        for group in self.data.steps(p.epoch, p.batch_in_epoch):
            # the network's scheduled lr: each group's lr over its scale (not a head's, not a train.lr_scales one)
            run.last_lr = max(g["lr"] / g["lr_scale"] for g in self.state.optimizer.param_groups
                              if not str(g.get("group_name", "")).startswith("aux_") and g.get("lr_scale", 1) > 0)
            loss, norm = self.train_step(group)
            p.step += 1
            p.batch_in_epoch += len(group)
            run.add(loss, norm)
            p.elapsed_s = run.elapsed0 + time.monotonic() - run.start
            bar.update(1)
            stopped = self._stop_reason(run)
            if p.step % max(t.log_every, 1) == 0 or stopped:
                self._log_window(run, bar)
            if t.val_every and (p.step % t.val_every == 0 or stopped):
                self.validate(run)
            p.roll_epoch(self.data.micro_per_epoch)
            if stopped:
                return stopped
            if t.save_every and p.step % t.save_every == 0:
                self.save()
        return None

    def validate(self, run: RunStats) -> None:
        """Score the validation sets now (rank 0) and log them; their time is left out of the
        throughput window."""
        if self.validator is None:
            return
        t0 = time.monotonic()
        self.last_val = self.validator.run(
            self.net, self.device, self.autocast, self.tcfg.loss_beta, self.tcfg.loss_fg_weight
        )
        self.val_log.write(self.step, self.last_val)
        log.info("val step %d: %s", self.step, ", ".join(
            f"{k} mIoU {v['miou']:.1f} loss {v['loss']:.4f}" for k, v in self.last_val.items()))
        run.window_t0 += time.monotonic() - t0

    def _stop_reason(self, run: RunStats) -> str | None:
        """``stop_after_steps``, ``max_steps`` or ``max_minutes`` when training must stop now.

        Every rank takes the same decision (the time budget is rank 0's clock).
        """
        t, step = self.tcfg, self.step
        if t.stop_after_steps and step - run.start_step >= t.stop_after_steps:
            return "stop_after_steps"
        if step >= self.max_steps:
            return "max_steps"
        if t.max_minutes and self.group.broadcast_flag(
            time.monotonic() - run.start > t.max_minutes * 60.0
        ):
            return "max_minutes"
        return None

    def _log_window(self, run: RunStats, bar: Any) -> None:
        """Average the window over ranks, write its CSV row (rank 0) and update the bar."""
        stats = self.group.mean(run.window())
        norm, rate = run.close_window(stats, self.step, self.global_batch)
        p = self.state.progress
        extra = {}
        if self.aux_head is not None:  # this rank's mean family cross-entropy over the window
            extra["aux_family_loss"] = (f"{torch.stack(self.aux_window).mean().item():.6g}"
                                        if self.aux_window else "")
            self.aux_window = []
        self.csv.write({
            **extra,
            "step": p.step,
            "epoch": p.epoch,
            "loss": f"{run.last_loss:.6g}",
            "lr": f"{run.last_lr:.6g}",
            "grad_norm": f"{norm:.6g}",
            "samples_per_s": f"{rate:.4g}",
            "elapsed_s": f"{p.elapsed_s:.2f}",
        })
        bar.set_postfix(loss=f"{run.last_loss:.4f}", lr=f"{run.last_lr:.2e}")

    def _finish(self, stopped: str, run: RunStats) -> dict[str, Any]:
        """Write ``summary.json`` (rank 0) and return it, with ``losses`` ``{step: loss}`` added."""
        p, out = self.state.progress, self.output_dir
        summary: dict[str, Any] = {
            "model": self.model_name,
            "step": p.step,
            "max_steps": self.max_steps,
            "epoch": p.epoch,
            "steps_this_run": p.step - run.start_step,
            "stopped": stopped,
            "final_loss": run.last_loss if math.isfinite(run.last_loss) else None,
            "nonfinite_steps": run.nonfinite_steps,
            "samples_per_s": (sum(run.rates) / len(run.rates)) if run.rates else None,
            "elapsed_s": round(p.elapsed_s, 3),
            "world_size": self.world_size,
            "global_batch": self.global_batch,
            "device": str(self.device),
            "precision": self.precision,
            "num_params": sum(q.numel() for q in self.net.parameters()),
            "resumed_from": self.resumed_from,
            "output_dir": str(out),
            "checkpoint": str(out / CKPT_NAME),
            "weights": str(out / WEIGHTS_NAME),
            "log": str(out / LOG_NAME),
            "val": self.last_val or None,
        }
        if self.job.debug_fingerprints:
            summary["rank_fingerprints"] = self.group.gather(weights_fingerprint(self.net))
            if self.aux_head is not None:
                summary["rank_aux_fingerprints"] = self.group.gather(weights_fingerprint(self.aux_head))
        if self.is_main:
            with atomic_path(out / SUMMARY_NAME) as tmp:
                tmp.write_text(json.dumps(summary, indent=2))
            log.info("done: step %d (%s), loss %.5f, outputs in %s", p.step, stopped, run.last_loss, out)
        summary["losses"] = dict(run.history)
        return summary

    def close(self) -> None:
        """Tear down the process group if this trainer created it."""
        self.group.close()


def train(cfg: DictConfig | TrainJobConfig) -> dict[str, Any]:
    """Train as configured (``conf/train.yaml``); returns the summary (also in ``summary.json``).

    The returned summary additionally holds ``losses``: ``{step: loss}`` for the steps logged here.

    Raises:
        InputError: a bad config value, missing data or checkpoint (one line).
    """
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
