"""Evaluation jobs behind ``tools/evaluate.py``: few-shot episodes (folder data sets or held-out generated
episodes) and VOS J&F.

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

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig, ListConfig
from tqdm import tqdm

from ..errors import InputError
from ..io.files import atomic_path, ensure_output_dir
from ..io.images import load_image
from ..io.masks import load_mask
from .miou import FewShotMeter

__all__ = ["HELDOUT_SEED_BASE", "EvalEpisode", "folder_episodes", "parse_rows", "run_fewshot",
           "score_episode", "synthetic_episodes"]

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
    from ..data.folders import load_fewshot_folder

    dataset = load_fewshot_folder(Path(root))
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


def score_episode(meter: FewShotMeter, name: str, pred: np.ndarray, gt: np.ndarray) -> None:
    """Add every foreground id of ``gt`` as one binary (pred == id, gt == id) pair of class ``name``."""
    for j in np.unique(gt):
        if j == 0 or j == 255:
            continue
        g = np.where(gt == 255, 255, gt == j).astype(np.int64)
        meter.update(name, (pred == j).astype(np.int64), g)


def run_fewshot(cfg: DictConfig) -> dict:
    """mIoU / FB-IoU of one or more ``strategy@K`` rows and the trivial baselines on the same episodes."""
    from ..apps.few_shot import FewShotSegmenter
    from ..build import build_model
    from ..utils.runtime import resolve_device

    rows = parse_rows(list(cfg.rows) if isinstance(cfg.get("rows"), (list, ListConfig)) else None,
                      cfg.strategy.name, cfg.shots)
    shots = max(k for _, k in rows)
    data = cfg.get("data") or {"source": "folder"}
    if data.get("source") == "synthetic":
        num = int(data.get("episodes", 300))
        episodes = synthetic_episodes(num, shots, int(cfg.seed), data.get("size", (224, 224)),
                                      data.get("kinds"))
        source = f"synthetic held-out episodes (seed {cfg.seed})"
    elif data.get("source") == "folder":
        if not cfg.root:
            raise InputError("give root=<folder data set> (FSS-1000, PerSeg, flat pairs or images/masks "
                             "layout), or data=synthetic")
        episodes = folder_episodes(Path(cfg.root), shots, int(cfg.episodes_per_class), int(cfg.seed),
                                   str(cfg.seg_type))
        source, num = str(cfg.root), None
    else:
        raise InputError(f"data.source={data.get('source')}: expected folder or synthetic")

    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=resolve_device(cfg.device))
    segmenters = {}
    for name, k in rows:
        if name == "plain" and k > 1:
            raise InputError(f"rows: plain@{k}: the plain strategy takes 1 prompt; use an ensemble")
        segmenters[f"{name}@{k}"] = (k, FewShotSegmenter(model, strategy=name, precision=cfg.precision))
    meters = {key: FewShotMeter() for key in segmenters}
    meters.update({"baseline_copy_prompt_mask": FewShotMeter(), "baseline_all_foreground": FewShotMeter()})
    seconds = {key: 0.0 for key in segmenters}
    for ep in tqdm(episodes, total=num, desc="episodes"):
        q_img, gt = ep.query
        for key, (k, seg) in segmenters.items():
            t0 = time.perf_counter()
            seg.set_prompts([p[0] for p in ep.prompts[:k]], [p[1] for p in ep.prompts[:k]],
                            seg_type=ep.seg_type)
            pred = seg.predict(q_img).labels
            seconds[key] += time.perf_counter() - t0
            score_episode(meters[key], ep.name, pred, gt)
        copied = cv2.resize(ep.prompts[0][1].astype(np.uint8), gt.shape[::-1],
                            interpolation=cv2.INTER_NEAREST).astype(np.int64)
        score_episode(meters["baseline_copy_prompt_mask"], ep.name, copied, gt)
        for j in np.unique(gt):
            if j not in (0, 255):
                g = np.where(gt == 255, 255, gt == j).astype(np.int64)
                meters["baseline_all_foreground"].update(ep.name, np.ones_like(gt), g)
    report = {"data": source, "shots": shots, "seed": int(cfg.seed), "model": str(cfg.model.name),
              "checkpoint": str(cfg.checkpoint or cfg.model.get("checkpoint")),
              "rows": {key: {"mIoU": m.miou(), "FB-IoU": m.fb_iou(), "per_class": m.class_iou(),
                             "pairs": m.num_episodes,
                             **({"s_per_episode": seconds[key] / max(1, m.num_episodes)}
                                if key in seconds else {})}
                       for key, m in meters.items()}}
    print(f"{'row':28s} {'mIoU':>7s} {'FB-IoU':>7s}  scored pairs")
    for key, r in report["rows"].items():
        print(f"{key:28s} {100 * r['mIoU']:7.2f} {100 * r['FB-IoU']:7.2f}  {r['pairs']}")
    out = ensure_output_dir(Path(cfg.output_dir))
    with atomic_path(out / "fewshot_report.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    return report
