"""Processes started by torchrun: their layout, sharded inference jobs (no process group needed) and the
process group of training (collectives that fall back to the identity in a single process)."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist

from ..io.files import atomic_path
from .runtime import resolve_device

__all__ = ["DistInfo", "ProcessGroup"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank of this process (1 process when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistInfo:
        """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (defaults 0, 1, 0)."""
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def run_id() -> str:
        """An id shared by the processes of one launch (torchrun's rendezvous id), "" when unknown."""
        rid = os.environ.get("TORCHELASTIC_RUN_ID", "")
        if rid:
            return rid
        addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
        return f"{addr}:{port}" if addr or port else ""

    def merge_summaries(self, out_dir: Path, summary: dict, timeout_s: float = 3600.0) -> dict:
        """Every rank writes ``summary.rank<r>.json``; rank 0 waits for all of them and returns the merged
        summary (targets united, failures concatenated, counts summed); other ranks return their own.

        Parts are tagged with :meth:`run_id`, so a part left in ``out_dir`` by an earlier, crashed launch is
        never mistaken for this launch's (rank 0 waits for the current one to replace it). A target reported
        by two ranks is a sharding bug and raises.
        """
        run_id = self.run_id()
        part = out_dir / f"summary.rank{self.rank}.json"
        with atomic_path(part) as tmp:
            tmp.write_text(json.dumps({**summary, "run_id": run_id}))
        if not self.is_main:
            return summary
        paths = [out_dir / f"summary.rank{r}.json" for r in range(self.world_size)]
        parts: dict[int, dict] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            for r, p in enumerate(paths):
                if r not in parts:
                    s = _read_part(p)
                    if s is not None and s.get("run_id") == run_id:
                        parts[r] = s
            if len(parts) == self.world_size:
                break
            if time.monotonic() > deadline:
                missing = [paths[r].name for r in range(self.world_size) if r not in parts]
                raise TimeoutError(f"{out_dir}: ranks never reported: {', '.join(missing)}")
            time.sleep(0.2)
        merged = dict(summary)
        merged["targets"], merged["failed"] = {}, []
        merged["seconds"] = 0.0
        for r in range(self.world_size):
            s = parts[r]
            twice = sorted(set(s["targets"]) & set(merged["targets"]))
            if twice:
                raise RuntimeError(f"rank {r} reported targets another rank also did: {', '.join(twice)}")
            merged["targets"].update(s["targets"])
            merged["failed"].extend(s["failed"])
            merged["seconds"] = max(merged["seconds"], s["seconds"])
        for p in paths:
            p.unlink(missing_ok=True)
        merged["outputs"] = sorted(set().union(*(parts[r].get("outputs", []) for r in parts)))
        merged["num_ok"], merged["num_failed"] = len(merged["targets"]), len(merged["failed"])
        merged["world_size"] = self.world_size
        return merged


def _read_part(path: Path) -> dict | None:
    """A rank's summary part, or None while it is absent (parts are written atomically)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class ProcessGroup:
    """The ``torch.distributed`` side of a training process: its device and, under torchrun, the process
    group (nccl on CUDA, gloo on CPU). Every collective is the identity in a single process.

    Args:
        device: requested device (``auto``, ``cpu``, ``cuda``, ``cuda:N``); under torchrun ``auto``/``cuda``
            become ``cuda:LOCAL_RANK`` when CUDA is available.
        info: process layout; None reads the environment.
        timeout_min: collective timeout of the group it creates.

    Attributes:
        info: rank / world size / local rank.
        device: this process's torch device (``cuda`` devices get an index and become current).
        owned: whether this object created the group (and :meth:`close` destroys it).
    """

    def __init__(self, device: str = "auto", info: DistInfo | None = None, timeout_min: float = 30.0) -> None:
        self.info = info or DistInfo.from_env()
        self.device = self._pick_device(str(device))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.owned = False
        if self.info.distributed and not tdist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            tdist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
            self.owned = True

    def _pick_device(self, device: str) -> torch.device:
        info = self.info
        if info.distributed and device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{info.local_rank}"
        dev = resolve_device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", info.local_rank if info.distributed else 0)
        return dev

    def close(self) -> None:
        """Destroy the process group if this object created it (idempotent)."""
        if self.owned and tdist.is_initialized():
            tdist.destroy_process_group()
        self.owned = False

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` averaged over ranks (a new tensor when distributed)."""
        if not self.info.distributed:
            return values
        values = values.clone()
        tdist.all_reduce(values)
        return values / self.info.world_size

    def gather(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects)."""
        if not self.info.distributed:
            return [obj]
        out: list[Any] = [None] * self.info.world_size
        tdist.all_gather_object(out, obj)
        return out

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (so that all ranks take the same branch)."""
        t = torch.tensor([float(flag)], device=self.device)
        if self.info.distributed:
            tdist.broadcast(t, 0)
        return bool(t.item())

    def barrier(self) -> None:
        if self.info.distributed:
            tdist.barrier()
