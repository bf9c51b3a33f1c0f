"""Few-shot evaluation: the episodes (folder data sets or held-out generated episodes) and their scoring.
The job that runs strategies over them is :mod:`painter_seg.jobs.evaluate`.

Few-shot protocol. Every episode has a class name, K prompt pairs and one query pair, all with integer id
maps. Each foreground id ``j`` of the query is scored as a binary pair ``(pred == j, gt == j)`` under the
episode's class name (:class:`~painter_seg.evaluation.miou.FewShotMeter`: intersections and unions summed
per class, then the mean over classes). Folder sets are binary (id 1 = the class); generated episodes may
carry several classes or instances, and their "class" is the episode kind (semantic, instance, ...).

Several rows share the same episodes: a row is ``strategy@K`` (e.g. ``plain@1``, ``feature_ensemble@5``)
and uses the first K prompts of each episode, so 1-shot and 5-shot rows see the same queries. Two trivial
baselines are scored on the same queries: the first prompt's mask copied onto the query, and "everything
is the object" for every id.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..codec.canvas import resize_labels
from ..errors import InputError
from ..io.images import load_image
from ..io.masks import load_mask
from .miou import FewShotMeter

__all__ = [
    "BASELINES",
    "HELDOUT_SEED_BASE",
    "EvalEpisode",
    "folder_episodes",
    "parse_rows",
    "score_baselines",
    "score_episode",
    "synthetic_episodes",
]

# Training draws every generated episode's seed from ``rng.integers(0, 2**31 - 1)``
# (painter_seg.data.in_context.SyntheticInContextDataset): evaluation seeds start at 2**31, so no
# evaluation episode can ever have been a training episode.
HELDOUT_SEED_BASE = 2**31
_SEEDS_PER_RUN = 1_000_000


@dataclass
class EvalEpisode:
    """One scored episode: ``prompts`` and ``query`` are ``(uint8 [H, W, 3] RGB, int64 [H, W] ids)``."""

    name: str
    prompts: list[tuple[np.ndarray, np.ndarray]]
    query: tuple[np.ndarray, np.ndarray]
    seg_type: str = "semantic"


def folder_episodes(root: Path, shots: int, per_class: int, seed: int,
                    seg_type: str = "semantic") -> Iterator[EvalEpisode]:
    """K-shot episodes of a folder data set (fixed seed): for each class, ``per_class`` queries, each with
    ``shots`` other pairs of the same class as prompts. Masks are binarised (any id > 0 = the class)."""
    from ..data.folders import load_few_shot_folder

    dataset = load_few_shot_folder(Path(root))
    rng = np.random.default_rng(seed)

    def pair(p):
        return load_image(p[0]), (load_mask(p[1]).labels > 0).astype(np.int64)

    for name in sorted(dataset):
        pairs = dataset[name]
        if len(pairs) < shots + 1:
            continue
        for _ in range(per_class):
            idx = rng.permutation(len(pairs))[: shots + 1]
            yield EvalEpisode(name, [pair(pairs[i]) for i in idx[1:]], pair(pairs[idx[0]]), seg_type)


def synthetic_episodes(num: int, shots: int, seed: int, size: Sequence[int] = (224, 224),
                       kinds: Sequence[str] | None = None) -> Iterator[EvalEpisode]:
    """``num`` held-out generated episodes (seeds ``HELDOUT_SEED_BASE + seed * 1e6 + i``, never drawn by
    training); kinds cycle through ``kinds`` (default: all of them) so each kind gets an equal share."""
    from ..data.synthetic import KINDS, SEG_TYPES, generate_episode

    kinds = list(kinds) if kinds else list(KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise InputError(f"kinds: unknown {bad}, expected some of {list(KINDS)}")
    if not 0 < num <= _SEEDS_PER_RUN:
        raise InputError(f"episodes={num}: expected 1..{_SEEDS_PER_RUN}")
    for i in range(num):
        kind = kinds[i % len(kinds)]
        ep = generate_episode(HELDOUT_SEED_BASE + int(seed) * _SEEDS_PER_RUN + i, kind=kind,
                              num_shots=shots, size=tuple(int(s) for s in size))
        yield EvalEpisode(kind, [(np.asarray(a), np.asarray(b, np.int64)) for a, b in ep.prompts],
                          (np.asarray(ep.query[0]), np.asarray(ep.query[1], np.int64)),
                          "instance" if SEG_TYPES[kind] else "semantic")


def parse_rows(rows: Sequence[str] | None, strategy: str, shots: int) -> list[tuple[str, int]]:
    """``["plain@1", "feature_ensemble@5"]`` -> ``[("plain", 1), ("feature_ensemble", 5)]``;
    None -> ``[(strategy, shots)]``."""
    from ..strategies import STRATEGIES

    usable = sorted(n for n in STRATEGIES if n != "tuned")  # a learned prompt is not built from shots
    if not rows:
        rows = [f"{strategy}@{shots}"]
    out = []
    for row in rows:
        name, _, k = str(row).partition("@")
        if name not in usable or not k.isdigit() or int(k) < 1:
            raise InputError(f"rows: {row!r} is not <strategy>@<shots> with a strategy in {usable} and "
                             f"shots >= 1 (score a learned prompt with tools/report_prompt_tuning.py)")
        out.append((name, int(k)))
    return out


def score_episode(meter: FewShotMeter, name: str, pred: np.ndarray, gt: np.ndarray,
                  all_foreground: bool = False) -> None:
    """Add every foreground id ``j`` of ``gt`` as one binary pair ``(pred == j, gt == j)`` of class ``name``
    (255 in ``gt`` is ignored). ``all_foreground`` scores the prediction "every pixel is ``j``" instead."""
    for j in np.unique(gt):
        if j == 0 or j == 255:
            continue
        g = np.where(gt == 255, 255, gt == j).astype(np.int64)
        meter.update(name, np.ones_like(gt) if all_foreground else (pred == j).astype(np.int64), g)


BASELINES = ("baseline_copy_prompt_mask", "baseline_all_foreground")


def score_baselines(meters: dict[str, FewShotMeter], ep: EvalEpisode) -> None:
    """Score the two trivial baselines of ``ep`` into ``meters[BASELINES[i]]``: the first prompt's mask copied
    onto the query (nearest resize), and "everything is the object" for every foreground id."""
    gt = ep.query[1]
    copied = resize_labels(np.asarray(ep.prompts[0][1], np.int64), gt.shape)
    score_episode(meters[BASELINES[0]], ep.name, copied, gt)
    score_episode(meters[BASELINES[1]], ep.name, np.full_like(gt, -1), gt, all_foreground=True)
