"""Training state and exact resume: ``last.pt`` written and read back, RNG states, seeding.

``last.pt`` holds plain tensors and containers only (it loads with ``torch.load(weights_only=True)``):

* ``model``, ``optimizer``, ``scheduler``, ``scaler``: the state dicts;
* ``step``, ``epoch``, ``batch_in_epoch``, ``elapsed_s``: the :class:`Progress` counters;
* ``world_size`` and ``rng``: the global RNG states of every rank (:func:`rng_state`);
* ``model_name`` and ``config`` (the resolved config as YAML), for the record.

A run resumed on as many processes reproduces the uninterrupted run step for step: data order and
masks are pure functions of ``(seed, epoch, step, rank)`` and the global RNGs are restored.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.files import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "CKPT_NAME",
    "Progress",
    "TrainState",
    "read_checkpoint",
    "resume_path",
    "rng_state",
    "seed_all",
    "set_rng_state",
]

CKPT_NAME = "last.pt"


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def resume_path(resume: bool | str | None, output_dir: Path) -> Path | None:
    """The ``last.pt`` to resume from, or None to start afresh.

    Args:
        resume: False / "false" -> None; True / "true" / "auto" -> ``output_dir/last.pt`` if it
            exists (else None, logged); any other string: a ``last.pt`` or the folder holding one.

    Raises:
        InputError: an explicit path that does not exist.
    """
    if resume in (None, False) or str(resume).lower() in ("false", "no", "0", ""):
        return None
    if resume is True or str(resume).lower() in ("true", "yes", "1", "auto"):
        path = output_dir / CKPT_NAME
        if not path.is_file():
            log.info("resume=true but %s does not exist: starting from scratch", path)
            return None
        return path
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / CKPT_NAME
    if not path.is_file():
        raise InputError(f"resume={resume}: checkpoint not found ({path})")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a ``last.pt`` safely (``weights_only``), checking that it is a training checkpoint."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / foreign file
        raise InputError(
            f"{path}: not a readable training checkpoint ({' '.join(str(e).split())[:200]})"
        ) from e
    if not isinstance(state, dict) or "optimizer" not in state or "model" not in state:
        raise InputError(f"{path}: not a training checkpoint (use init_checkpoint= for weights)")
    return state


@dataclass
class Progress:
    """Where training stands: optimiser steps done, current epoch, micro-batches of that epoch
    already consumed, training wall time accumulated over resumptions."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_s: float = 0.0

    def roll_epoch(self, micro_per_epoch: int) -> None:
        """Move to the next epoch once this one's ``micro_per_epoch`` micro-batches are consumed."""
        if self.batch_in_epoch >= micro_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0


@dataclass
class TrainState:
    """Everything a resumed run needs besides the RNGs: the bare network, the optimiser, the
    ``LambdaLR`` schedule, the grad scaler and the :class:`Progress` counters."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    progress: Progress = field(default_factory=Progress)
    aux: nn.Module | None = None  # training-only heads (not part of the exported weights)

    def to_checkpoint(self, rngs: list[dict], world_size: int, **record: Any) -> dict[str, Any]:
        """The ``last.pt`` dictionary (``rngs``: one :func:`rng_state` per rank; ``record``: extra
        plain entries such as ``model_name`` and ``config``)."""
        p = self.progress
        return {
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": p.step,
            "epoch": p.epoch,
            "batch_in_epoch": p.batch_in_epoch,
            "elapsed_s": p.elapsed_s,
            "world_size": world_size,
            "rng": rngs,
            **({"aux": {k: v.detach().cpu() for k, v in self.aux.state_dict().items()}}
               if self.aux is not None else {}),
            **record,
        }

    def save(self, path: Path, checkpoint: dict[str, Any]) -> None:
        """Write ``checkpoint`` (from :meth:`to_checkpoint`) to ``path`` atomically."""
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load(self, state: dict[str, Any], path: Path) -> None:
        """Restore model, optimiser, scheduler, scaler and counters from a ``last.pt`` dictionary.

        The configured schedule (warm-up, length, floor) wins over the saved one, so a resumed run
        may be given a longer ``max_steps``.

        Raises:
            InputError: the checkpoint does not fit the configured model / optimiser.
        """
        try:
            self.net.load_state_dict(state["model"], strict=True)
            if self.aux is not None:
                if "aux" not in state:
                    raise KeyError("it has no auxiliary head (train.aux_family_weight was 0 when it was written)")
                self.aux.load_state_dict(state["aux"], strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise InputError(
                f"{path}: does not fit the configured model/optimizer "
                f"({' '.join(str(e).split())[:300]})"
            ) from e
        configured = [dict(fn.__dict__) for fn in self.scheduler.lr_lambdas]
        self.scheduler.load_state_dict(state["scheduler"])
        for fn, fields_ in zip(self.scheduler.lr_lambdas, configured, strict=True):
            fn.__dict__.update(fields_)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(
            int(state["step"]),
            int(state["epoch"]),
            int(state["batch_in_epoch"]),
            float(state.get("elapsed_s", 0.0)),
        )
