"""The order in which training visits its dataset, resumable in the middle of an epoch.

The visiting order is a pure function of ``(seed, epoch)`` (a :class:`SeededRandomSampler` in one
process, a :class:`~torch.utils.data.DistributedSampler` shard per rank under torchrun), never of the
global RNG, and :class:`ResumableSampler` skips what an interrupted epoch already consumed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from ..data.synthetic.episodes import FAMILY_IGNORE
from ..errors import InputError
from ..utils.dist import DistInfo

__all__ = ["ResumableSampler", "SeededRandomSampler", "TrainLoader", "chunks", "collate_samples"]


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


def chunks(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``n`` items (a shorter tail is dropped)."""
    it = iter(it)
    while True:
        chunk = list(itertools.islice(it, n))
        if len(chunk) < n:
            return
        yield chunk


OPTIONAL_FILL = {"family": FAMILY_IGNORE}  # per-pixel targets only some datasets give: value filled in for the others


def collate_samples(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``default_collate`` of dataset items, after giving every item the optional per-pixel targets
    (:data:`OPTIONAL_FILL`) that some items of a mixed batch carry (filled: never a target)."""
    for key, fill in OPTIONAL_FILL.items():
        have = [it[key] for it in items if key in it]
        if have and len(have) < len(items):
            items = [it if key in it else {**it, key: torch.full(it["imgs"].shape[-2:], fill,
                                                                 dtype=have[0].dtype)}
                     for it in items]
    return default_collate(items)


@dataclass
class TrainLoader:
    """Micro-batches of a dataset for one process, grouped into optimiser steps.

    Args:
        dataset: items are dicts of tensors (``imgs``, ``tgts``, ``valid``, ``seg_type``).
        batch_size: items per micro-batch (per process).
        accum_steps: micro-batches per optimiser step.
        seed: seed of the visiting order.
        info: process layout (a shard per rank when distributed).
        num_workers: loader worker processes.
        pin_memory: pin host memory (CUDA).

    Raises:
        InputError: the dataset (or this rank's shard) holds less than one optimiser step.
    """

    dataset: Dataset
    batch_size: int
    accum_steps: int
    seed: int
    info: DistInfo
    num_workers: int = 0
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if self.info.distributed:
            base: Sampler[int] = DistributedSampler(
                self.dataset, self.info.world_size, self.info.rank, shuffle=True, seed=self.seed,
                drop_last=True,
            )
        else:
            base = SeededRandomSampler(len(self.dataset), self.seed)
        self.sampler = ResumableSampler(base)
        micro = len(base) // self.batch_size
        self.micro_per_epoch = micro // self.accum_steps * self.accum_steps
        self.steps_per_epoch = self.micro_per_epoch // self.accum_steps
        if self.steps_per_epoch < 1:
            raise InputError(
                f"data.length={len(self.dataset)} is too small for batch_size={self.batch_size} x "
                f"accum_steps={self.accum_steps} x {self.info.world_size} process(es)"
            )
        self.loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            collate_fn=collate_samples,
            num_workers=self.num_workers,
            drop_last=True,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator(),  # keeps the loader off the global RNG (exact resume)
        )

    def steps(self, epoch: int, batch_in_epoch: int) -> Iterator[list[dict[str, torch.Tensor]]]:
        """The optimiser steps left in ``epoch`` after ``batch_in_epoch`` consumed micro-batches,
        each a list of ``accum_steps`` collated micro-batches."""
        self.sampler.set_epoch(epoch, start=batch_in_epoch * self.batch_size)
        remaining = self.micro_per_epoch - batch_in_epoch
        return chunks(itertools.islice(iter(self.loader), remaining), self.accum_steps)
