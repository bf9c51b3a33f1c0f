"""What training records: the ``train_log.csv`` rows and the running statistics of a run.

``train_log.csv`` has one row every ``log_every`` steps (and at the last step):
``step,epoch,loss,lr,grad_norm,samples_per_s,elapsed_s``, loss and grad norm averaged over the
window and over ranks, samples counted over all ranks. A resumed run keeps the rows up to its
starting step and appends, so the file reads as if the run had never stopped.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

__all__ = ["CSV_FIELDS", "LOG_NAME", "CsvLog", "RunStats"]

CSV_FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "elapsed_s")
LOG_NAME = "train_log.csv"


class CsvLog:
    """A CSV log of rank 0 (other ranks hold a disabled log): ``train_log.csv`` by default.

    Args:
        path: the CSV file; its folder must exist on rank 0.
        enabled: False on ranks other than 0 (nothing is read or written).
        keep_until: on a resumed run, the step it resumes from: earlier rows are kept, later
            ones (written after the checkpoint) dropped; None starts a new file.
        fields: the columns (a ``step`` column is required).
    """

    def __init__(self, path: Path, enabled: bool = True, keep_until: int | None = None,
                 fields: tuple[str, ...] = CSV_FIELDS) -> None:
        self.path = path
        self.enabled = enabled
        self.fields = fields
        if not enabled:
            return
        rows: list[dict[str, str]] = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (keys :attr:`fields`, values already formatted)."""
        self.write_rows([row])

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append several rows at once."""
        if self.enabled:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields, lineterminator="\n").writerows(rows)


@dataclass
class RunStats:
    """Statistics of this run (one process): the current logging window and what it has seen.

    Attributes:
        start_step: the step this run started from.
        start: ``time.monotonic()`` at the start of the run.
        elapsed0: training wall time of earlier runs (resumed).
        last_lr: the largest group lr of the latest step.
        last_loss: the mean loss of the latest logged window (nan before the first).
        rates: samples/s of every logged window.
        nonfinite_steps: steps whose rank-averaged loss was not finite.
        history: ``{step: loss}`` of the logged steps (rank-averaged).
    """

    start_step: int
    start: float = field(default_factory=time.monotonic)
    elapsed0: float = 0.0
    last_lr: float = float("nan")
    last_loss: float = float("nan")
    rates: list[float] = field(default_factory=list)
    nonfinite_steps: int = 0
    history: dict[int, float] = field(default_factory=dict)
    window_loss: list[torch.Tensor] = field(default_factory=list)
    window_norm: list[torch.Tensor] = field(default_factory=list)
    window_t0: float = field(default_factory=time.monotonic)

    def add(self, loss: torch.Tensor, norm: torch.Tensor) -> None:
        """Record one step's loss and grad norm (tensors, kept on their device until logged)."""
        self.window_loss.append(loss)
        self.window_norm.append(norm)

    def window(self) -> torch.Tensor:
        """``[2, n]`` float: the window's losses and grad norms (to be averaged over ranks)."""
        return torch.stack([torch.stack(self.window_loss), torch.stack(self.window_norm)]).float()

    def close_window(self, stats: torch.Tensor, step: int, global_batch: int) -> tuple[float, float]:
        """Account for a window whose rank-averaged ``stats`` (from :meth:`window`) end at ``step``.

        Returns:
            (mean grad norm, samples/s over all ranks) of the window; ``last_loss`` is updated.
        """
        losses, norms = stats[0].tolist(), stats[1].tolist()
        bad = sum(not math.isfinite(v) for v in losses)
        if bad:
            self.nonfinite_steps += bad
            log.warning("non-finite loss in %d of the steps up to %d", bad, step)
        first = step - len(losses) + 1
        self.history.update({first + k: v for k, v in enumerate(losses)})
        wall = max(time.monotonic() - self.window_t0, 1e-9)
        rate = len(losses) * global_batch / wall
        self.rates.append(rate)
        self.last_loss = sum(losses) / len(losses)
        self.window_loss, self.window_norm = [], []
        self.window_t0 = time.monotonic()
        return sum(norms) / len(norms), rate
