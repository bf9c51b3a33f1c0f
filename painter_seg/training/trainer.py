"""The training loop: SegGPT masked painting on in-context canvases, resumable to the step.

``train(cfg)`` (config: ``conf/train.yaml``) builds the model with
:func:`painter_seg.build.build_model` (random init, or ``init_checkpoint`` to fine-tune, e.g. the
official ViT-L), the dataset from ``cfg.data``
(:func:`painter_seg.data.in_context.build_train_dataset`), AdamW with optional layer-wise lr
decay and a warm-up + cosine schedule
(:mod:`painter_seg.training.optim`, :mod:`painter_seg.utils.schedule`), and runs optimiser steps of the masked smooth-L1 loss with
Painter's masks (:mod:`painter_seg.training.masking`).

Outputs in ``cfg.output_dir`` (rank 0 only):

* ``train_log.csv``: ``step,epoch,loss,lr,grad_norm,samples_per_s,elapsed_s`` every ``log_every``
  steps (loss and grad norm averaged over the window and over ranks; samples over all ranks);
* ``last.pt``: everything needed to continue exactly (model, optimiser, scheduler, grad scaler,
  step, epoch, position in the epoch, RNG states of every rank), plain tensors/containers only, so
  it loads with ``torch.load(weights_only=True)``; written atomically every ``save_every`` steps
  and at the end;
* ``model.safetensors``: the weights alone (:func:`painter_seg.checkpoint.save_checkpoint`),
  loadable with ``build_model(..., checkpoint=...)``;
* ``summary.json``: what happened (steps, stop reason, final loss, throughput, paths).

Exact resumption: every sample is a pure function of ``(data seed, index)``, the visiting order a
pure function of ``(seed, epoch)`` (skipping what an interrupted epoch already consumed), the patch
masks a pure function of ``(seed, step, rank, micro-batch)``, and the global RNGs are restored; so
``resume=true`` reproduces the uninterrupted loss curve step for step (same hardware and threads).

Distributed: under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) the process group is
created (nccl on CUDA, gloo on CPU), the model wrapped in DDP and the data sharded by a
:class:`~torch.utils.data.DistributedSampler`.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..build import build_model
from ..checkpoint import save_checkpoint, weights_fingerprint
from ..data.in_context import build_train_dataset
from ..errors import InputError
from ..model.loss import masked_smooth_l1
from ..utils.runtime import autocast, resolve_device
from ..utils.schedule import WarmupCosine, build_scheduler
from .masking import sample_masks
from .optim import build_optimizer

log = logging.getLogger(__name__)

__all__ = ["CSV_FIELDS", "ResumableSampler", "SeededRandomSampler", "Trainer", "train"]

CSV_FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "elapsed_s")
CKPT_NAME = "last.pt"
WEIGHTS_NAME = "model.safetensors"
LOG_NAME = "train_log.csv"
SUMMARY_NAME = "summary.json"


# ---------------------------------------------------------------------------------------- samplers
class SeededRandomSampler(Sampler[int]):
    """A random permutation of ``range(length)`` that is a pure function of ``(seed, epoch)``.

    Unlike :class:`~torch.utils.data.RandomSampler` it never touches the global RNG.
    """

    def __init__(self, length: int, seed: int = 0) -> None:
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # as DistributedSampler
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


class ResumableSampler(Sampler[int]):
    """Wraps a sampler with ``set_epoch``; can start an epoch part-way (after ``start`` indices)."""

    def __init__(self, base: Sampler[int]) -> None:
        self.base = base
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.start, None)

    def __len__(self) -> int:
        return max(len(self.base) - self.start, 0)


# ---------------------------------------------------------------------------------------- helpers
def _rng_state() -> dict[str, Any]:
    """Global RNG states of this process as plain tensors / numbers (``weights_only`` loadable)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


# ---------------------------------------------------------------------------------------- trainer
class Trainer:
    """Holds the whole training state in plain attributes; :meth:`fit` runs the loop.

    Attributes:
        cfg: the composed config (``conf/train.yaml``).
        rank / world_size / local_rank / distributed: process layout (torchrun or single process).
        device: torch device of this process.
        model: the network (DDP-wrapped when distributed); :attr:`net` is the bare module.
        dataset / sampler / loader: the data pipeline.
        optimizer / scheduler / scaler: optimisation state.
        step / epoch / batch_in_epoch: optimiser steps done, current epoch, micro-batches of the
            current epoch already consumed.
        elapsed_s: training wall time, accumulated over resumptions.
        history: ``{step: loss}`` of the steps run by this process (rank-averaged).
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.tcfg = cfg.train
        self._owns_group = False
        self._init_distributed()
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _init_distributed(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.distributed = self.world_size > 1
        device = str(self.cfg.get("device", "auto"))
        if self.distributed and device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{self.local_rank}"
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", self.local_rank if self.distributed else 0)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.distributed and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(minutes=30))
            self._owns_group = True
        self.is_main = self.rank == 0

    def _setup(self) -> None:
        cfg, t = self.cfg, self.tcfg
        self.seed = int(cfg.seed)
        self.output_dir = Path(str(cfg.output_dir)).expanduser()
        self.precision = str(cfg.get("precision", "fp32"))
        if int(t.batch_size) < 1 or int(t.get("accum_steps", 1)) < 1:
            raise InputError("train.batch_size and train.accum_steps must be >= 1")
        self.batch_size = int(t.batch_size)
        self.accum_steps = int(t.get("accum_steps", 1))

        # model: identical init on every rank (DDP also broadcasts rank 0's weights)
        _seed_all(self.seed)
        init = cfg.get("init_checkpoint")
        self.net = build_model(
            cfg.model,
            checkpoint=str(init) if init else None,
            device=self.device,
            pretrained=False,
            strict=bool(cfg.get("init_strict", True)),
        )
        self.net.train()
        self.model_name = str(cfg.model.get("name", "model"))
        self.model: nn.Module = self.net
        if self.distributed:
            self.model = DistributedDataParallel(
                self.net,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(t.get("ddp_find_unused_parameters", False)),
            )
        _seed_all(self.seed + 1000 * self.rank)  # per-rank stream (drop path) from here on

        # data
        self.half_size = self.net.half_size
        try:
            self.dataset: Dataset = build_train_dataset(cfg.data, self.half_size, self.seed)
        except MissingMandatoryValue as e:
            raise InputError(
                f"missing required config value {e.full_key} (set it on the command line)"
            ) from e
        if self.distributed:
            base: Sampler[int] = DistributedSampler(
                self.dataset,
                self.world_size,
                self.rank,
                shuffle=True,
                seed=self.seed,
                drop_last=True,
            )
        else:
            base = SeededRandomSampler(len(self.dataset), self.seed)
        self.sampler = ResumableSampler(base)
        self.micro_per_epoch = (len(base) // self.batch_size) // self.accum_steps * self.accum_steps
        self.steps_per_epoch = self.micro_per_epoch // self.accum_steps
        if self.steps_per_epoch < 1:
            raise InputError(
                f"data.length={len(self.dataset)} is too small for batch_size={self.batch_size} x "
                f"accum_steps={self.accum_steps} x {self.world_size} process(es)"
            )
        workers = int(t.get("num_workers", 0))
        self.loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            generator=torch.Generator(),  # keeps the loader off the global RNG (exact resume)
        )

        # optimisation
        self.max_steps = int(t.get("max_steps") or 0)
        if t.get("epochs"):
            self.max_steps = self.max_steps or int(t.epochs) * self.steps_per_epoch
        if self.max_steps < 1:
            raise InputError("set train.max_steps (or train.epochs) to a positive number")
        self.global_batch = self.batch_size * self.accum_steps * self.world_size
        lr = float(t.lr)
        if t.get("lr_ref_batch"):
            lr = lr * self.global_batch / float(t.lr_ref_batch)
        self.base_lr = lr
        self.optimizer = build_optimizer(
            self.net,
            lr,
            weight_decay=float(t.weight_decay),
            betas=tuple(t.get("betas", (0.9, 0.999))),
            layer_decay=t.get("layer_decay"),
        )
        self.schedule = WarmupCosine(
            int(t.get("warmup_steps", 0)), self.max_steps, float(t.get("min_lr_ratio", 0.0))
        )
        self.scheduler = build_scheduler(
            self.optimizer, self.schedule.warmup_steps, self.max_steps, self.schedule.min_lr_ratio
        )
        use_scaler = self.precision == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.autocast = lambda: autocast(self.device, self.precision)
        self.grad_clip = float(t.get("grad_clip") or 0.0)

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.elapsed_s = 0.0
        self.history: dict[int, float] = {}
        self.nonfinite_steps = 0
        self.resumed_from: str | None = None
        self._maybe_resume()

    # ------------------------------------------------------------------ checkpoints
    def _resume_path(self) -> Path | None:
        r = self.cfg.get("resume", False)
        if r in (None, False) or str(r).lower() in ("false", "no", "0", ""):
            return None
        if r is True or str(r).lower() in ("true", "yes", "1", "auto"):
            path = self.output_dir / CKPT_NAME
            if not path.is_file():
                log.info("resume=true but %s does not exist: starting from scratch", path)
                return None
            return path
        path = Path(str(r)).expanduser()
        if path.is_dir():
            path = path / CKPT_NAME
        if not path.is_file():
            raise InputError(f"resume={r}: checkpoint not found ({path})")
        return path

    def _maybe_resume(self) -> None:
        path = self._resume_path()
        if path is None:
            return
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt / foreign file
            raise InputError(
                f"{path}: not a readable training checkpoint ({' '.join(str(e).split())[:200]})"
            ) from e
        if not isinstance(state, dict) or "optimizer" not in state or "model" not in state:
            raise InputError(
                f"{path}: not a training checkpoint (use init_checkpoint= for weights)"
            )
        try:
            self.net.load_state_dict(state["model"], strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise InputError(
                f"{path}: does not fit the configured model/optimizer "
                f"({' '.join(str(e).split())[:300]})"
            ) from e
        self.scheduler.load_state_dict(state["scheduler"])
        for fn in self.scheduler.lr_lambdas:  # the configured schedule wins (e.g. a longer run)
            fn.__dict__.update(self.schedule.__dict__)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        rngs = state.get("rng") or []
        if int(state.get("world_size", 1)) != self.world_size:
            log.warning(
                "%s was written by %s process(es), now %d: data order and RNG streams differ "
                "from an uninterrupted run",
                path,
                state.get("world_size"),
                self.world_size,
            )
            self.batch_in_epoch = min(self.batch_in_epoch, self.micro_per_epoch)
        elif self.rank < len(rngs):
            _set_rng_state(rngs[self.rank])
        if self.batch_in_epoch >= self.micro_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.resumed_from = str(path)
        if self.is_main:
            log.info(
                "resumed from %s at step %d (epoch %d, batch %d)",
                path,
                self.step,
                self.epoch,
                self.batch_in_epoch,
            )

    def _gather(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def save(self) -> None:
        """Write ``last.pt`` and ``model.safetensors`` (rank 0; every rank must call it)."""
        rngs = self._gather(_rng_state())
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            state = {
                "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "elapsed_s": self.elapsed_s,
                "world_size": self.world_size,
                "rng": rngs,
                "model_name": self.model_name,
                "config": OmegaConf.to_yaml(self.cfg, resolve=True),
            }
            _atomic_torch_save(state, self.output_dir / CKPT_NAME)
            save_checkpoint(
                self.net.state_dict(),
                self.output_dir / WEIGHTS_NAME,
                metadata={
                    "model": self.model_name,
                    "step": str(self.step),
                    "net": json.dumps(_plain(self.cfg.model.net)),
                },
            )
        if self.distributed:
            dist.barrier()

    # ------------------------------------------------------------------ one step
    def masks_for(self, step: int, micro: int, n: int) -> torch.Tensor:
        """Patch masks ``[n, L]`` bool for micro-batch ``micro`` of step ``step`` on this rank."""
        rng = np.random.default_rng([self.seed, 1, step, self.rank, micro])
        t = self.tcfg
        m = sample_masks(
            rng,
            self.net.grid_size,
            n,
            float(t.get("p_half_mask", 0.1)),
            mask_ratio=float(t.get("mask_ratio", 0.5)),
            min_num_patches=int(t.get("min_mask_patches", 16)),
            max_num_patches=t.get("max_mask_patches"),
        )
        return torch.from_numpy(m)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nb = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=nb) for k, v in batch.items()}

    def compute_loss(
        self, batch: dict[str, torch.Tensor], mask: torch.Tensor, model: nn.Module | None = None
    ) -> torch.Tensor:
        """Masked smooth-L1 of the model on one batch (``imgs``, ``tgts``, ``valid``, ``seg_type``).

        Args:
            batch: dataset items collated (any device; moved here).
            mask: ``[N or 1, L]`` bool patch mask.
            model: the module to call (default: the training model, DDP-wrapped if distributed).
        """
        b = self._to_device(batch)
        mask = mask.to(self.device)
        with self.autocast():
            pred = (model or self.model)(
                b["imgs"], b["tgts"], bool_masked_pos=mask, seg_type=b["seg_type"]
            )
        return masked_smooth_l1(
            pred.float(),
            b["tgts"],
            mask,
            self.net.patch_size,
            valid=b["valid"],
            beta=float(self.tcfg.get("loss_beta", 0.01)),
            fg_weight=float(self.tcfg.get("loss_fg_weight", 1.0)),
        )

    def train_step(
        self, micro_batches: list[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step over ``accum_steps`` micro-batches; returns (mean loss, grad norm)."""
        total = torch.zeros((), device=self.device)
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext()
            if self.distributed and not last:
                sync = self.model.no_sync()
            with sync:
                loss = self.compute_loss(
                    batch, self.masks_for(self.step, j, batch["imgs"].shape[0])
                )
                self.scaler.scale(loss / len(micro_batches)).backward()
            total += loss.detach()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(
            self.net.parameters(), self.grad_clip if self.grad_clip > 0 else math.inf
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return total / len(micro_batches), norm.detach().float()

    # ------------------------------------------------------------------ logging
    def _open_log(self) -> None:
        self._csv_path = self.output_dir / LOG_NAME
        if not self.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, str]] = []
        if self.resumed_from and self._csv_path.is_file():
            with open(self._csv_path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        with open(self._csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)

    def _write_row(self, row: dict[str, Any]) -> None:
        if self.is_main:
            with open(self._csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n").writerow(row)

    def _reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world_size
        return values

    def _should_stop_time(self, start: float) -> bool:
        budget = self.tcfg.get("max_minutes")
        if not budget:
            return False
        flag = torch.tensor(
            [float(time.monotonic() - start > float(budget) * 60.0)], device=self.device
        )
        if self.distributed:
            dist.broadcast(flag, 0)
        return bool(flag.item())

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (or ``stop_after_steps`` / ``max_minutes``); return a summary."""
        from tqdm.auto import tqdm

        t = self.tcfg
        log_every = max(int(t.get("log_every", 10)), 1)
        save_every = int(t.get("save_every") or 0)
        stop_after = int(t.get("stop_after_steps") or 0)
        self._open_log()
        start_step = self.step
        start = time.monotonic()
        if self.is_main:
            log.info(
                "training %s on %s: %d process(es), global batch %d, %d steps/epoch, "
                "steps %d -> %d",
                self.model_name,
                self.device,
                self.world_size,
                self.global_batch,
                self.steps_per_epoch,
                self.step,
                self.max_steps,
            )
        bar = tqdm(
            total=self.max_steps,
            initial=self.step,
            desc="train",
            dynamic_ncols=True,
            disable=not (self.is_main and bool(t.get("progress", True))),
        )
        win_loss: list[torch.Tensor] = []
        win_norm: list[torch.Tensor] = []
        win_t0 = time.monotonic()
        elapsed0 = self.elapsed_s
        stopped = "max_steps"
        last_lr = self.optimizer.param_groups[0]["lr"]
        last_loss = float("nan")
        rates: list[float] = []
        while self.step < self.max_steps:
            self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch * self.batch_size)
            remaining = self.micro_per_epoch - self.batch_in_epoch
            batches = itertools.islice(iter(self.loader), remaining)
            stop = False
            for group in _chunks(batches, self.accum_steps):
                last_lr = max(g["lr"] for g in self.optimizer.param_groups)
                loss, norm = self.train_step(group)
                self.step += 1
                self.batch_in_epoch += len(group)
                win_loss.append(loss)
                win_norm.append(norm)
                self.elapsed_s = elapsed0 + time.monotonic() - start
                bar.update(1)
                done = self.step >= self.max_steps
                if stop_after and self.step - start_step >= stop_after:
                    stopped, done = "stop_after_steps", True
                elif not done and self._should_stop_time(start):
                    stopped, done = "max_minutes", True
                if self.step % log_every == 0 or done:
                    stats = self._reduce_mean(
                        torch.stack([torch.stack(win_loss), torch.stack(win_norm)]).float()
                    )
                    losses, norms = stats[0].tolist(), stats[1].tolist()
                    bad = sum(not math.isfinite(v) for v in losses)
                    if bad:
                        self.nonfinite_steps += bad
                        log.warning("non-finite loss in %d of the steps up to %d", bad, self.step)
                    first = self.step - len(losses) + 1
                    self.history.update({first + k: v for k, v in enumerate(losses)})
                    wall = max(time.monotonic() - win_t0, 1e-9)
                    rate = len(losses) * self.global_batch / wall
                    rates.append(rate)
                    last_loss = sum(losses) / len(losses)
                    self._write_row(
                        {
                            "step": self.step,
                            "epoch": self.epoch,
                            "loss": f"{last_loss:.6g}",
                            "lr": f"{last_lr:.6g}",
                            "grad_norm": f"{sum(norms) / len(norms):.6g}",
                            "samples_per_s": f"{rate:.4g}",
                            "elapsed_s": f"{self.elapsed_s:.2f}",
                        }
                    )
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{last_lr:.2e}")
                    win_loss, win_norm = [], []
                    win_t0 = time.monotonic()
                if self.batch_in_epoch >= self.micro_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if done:
                    stop = True
                    break
                if save_every and self.step % save_every == 0:
                    self.save()
            if stop:
                break
        bar.close()
        self.save()
        return self._finish(stopped, last_loss, rates, start_step)

    def _finish(
        self, stopped: str, last_loss: float, rates: list[float], start_step: int
    ) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "model": self.model_name,
            "step": self.step,
            "max_steps": self.max_steps,
            "epoch": self.epoch,
            "steps_this_run": self.step - start_step,
            "stopped": stopped,
            "final_loss": last_loss if math.isfinite(last_loss) else None,
            "nonfinite_steps": self.nonfinite_steps,
            "samples_per_s": (sum(rates) / len(rates)) if rates else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "world_size": self.world_size,
            "global_batch": self.global_batch,
            "device": str(self.device),
            "precision": self.precision,
            "num_params": sum(p.numel() for p in self.net.parameters()),
            "resumed_from": self.resumed_from,
            "output_dir": str(self.output_dir),
            "checkpoint": str(self.output_dir / CKPT_NAME),
            "weights": str(self.output_dir / WEIGHTS_NAME),
            "log": str(self.output_dir / LOG_NAME),
        }
        if self.cfg.get("debug_fingerprints", False):
            summary["rank_fingerprints"] = self._gather(weights_fingerprint(self.net))
        if self.is_main:
            path = self.output_dir / SUMMARY_NAME
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(summary, indent=2))
            os.replace(tmp, path)
            log.info(
                "done: step %d (%s), loss %.5f, outputs in %s",
                self.step,
                stopped,
                last_loss,
                self.output_dir,
            )
        summary["losses"] = dict(self.history)
        return summary

    def close(self) -> None:
        """Tear down the process group if this trainer created it."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


def _chunks(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``n`` items (a shorter tail is dropped)."""
    it = iter(it)
    while True:
        chunk = list(itertools.islice(it, n))
        if len(chunk) < n:
            return
        yield chunk


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured (``conf/train.yaml``); returns the summary (also in ``summary.json``).

    The returned summary additionally holds ``losses``: ``{step: loss}`` for the steps run here.
    """
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        trainer.close()
