"""The ``tune-report`` job (``painter-seg tune-report``, ``tools/report_prompt_tuning.py``;
``conf/tune_prompt.yaml`` + ``report.*``): held-out mIoU of a tuned prompt against real example
pairs on one scene.

The scene (generated with ``report.scene=synthetic``, else ``images``/``masks``) is split (seeded)
into training pairs and ``report.holdout`` held-out pairs. Rows, all scored on the held-out pairs:

* ``best_single_pair``: the training pair that, as a plain prompt, best segments the other
  training pairs (at most ``report.max_candidates`` tried);
* ``feature_ensemble@K``: all K training pairs;
* ``tuned``: a prompt tuned on the training pairs only (its validation split, if any, comes out of
  them too; ``init=best`` starts it from the best single pair);
* ``tuned+feature_ensemble@K``: the tuned prompt with all training pairs.

Writes the tuned prompt (``output``), its PNGs and ``<stem>_report.json``; prints a table.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..apps.few_shot import FewShotSegmenter
from ..build import build_model
from ..errors import InputError
from ..io.files import atomic_write_bytes
from ..model import SegGPT
from ..tuning import Scene, score_pairs, split_pairs, synthetic_scene
from ..tuning.scene import LabeledImage
from ..utils.runtime import resolve_device, resolve_precision
from .tune import output_path, scene_of, tune, tune_config, write_prompt_files


class _Rows:
    """The report's rows: held-out mIoU of prompted segmenters, with their timings."""

    def __init__(self, held: Sequence[LabeledImage], ignore: int | None) -> None:
        self.held, self.ignore, self.rows = list(held), ignore, {}

    def score(self, name: str, seg: FewShotSegmenter, prepare_seconds: float, **extra) -> None:
        t0 = time.perf_counter()
        res = score_pairs(seg, self.held, self.ignore)
        self.rows[name] = {"mIoU": res["mIoU"], "per_class": res["per_class"],
                           "prepare_seconds": round(prepare_seconds, 2),
                           "predict_seconds": round(time.perf_counter() - t0, 2), **extra}


def _scene(cfg: DictConfig) -> Scene:
    r = cfg.report
    if r.scene not in (None, "synthetic"):
        raise InputError(f"report.scene={r.scene}: expected synthetic or null (use images=/masks=)")
    _check_report(r)
    scene = (synthetic_scene(int(cfg.seed), int(r.views), r.size, int(r.num_classes))
             if r.scene == "synthetic" else scene_of(cfg))
    if len(scene.pairs) < 2:
        raise InputError(f"{scene.source}: the report needs at least 2 labelled images, found "
                         f"{len(scene.pairs)}")
    return scene


def _check_report(r: DictConfig) -> None:
    """The ``report.*`` values, before any image is read or generated (one line naming the key)."""
    if not 0 < r.holdout < 1:
        raise InputError(f"report.holdout={r.holdout}: expected a share 0 < holdout < 1")
    if r.max_candidates < 1:
        raise InputError(f"report.max_candidates={r.max_candidates}: expected >= 1")
    if r.scene != "synthetic":
        return
    if r.views < 2:
        raise InputError(f"report.views={r.views}: expected >= 2 (training and held-out views)")
    if not 1 <= r.num_classes <= 8:
        raise InputError(f"report.num_classes={r.num_classes}: expected 1..8")
    size = list(r.size) if OmegaConf.is_list(r.size) else None
    if size is None or len(size) != 2 or not all(isinstance(v, int) and v >= 32 for v in size):
        raise InputError(f"report.size={r.size}: expected [height, width], each >= 32")


def _best_single_pair(cfg: DictConfig, rows: _Rows, prompted, train: list[LabeledImage]
                      ) -> tuple[int, float, float]:
    """Index of the best training pair (each candidate prompts the other training pairs), its
    training mIoU and the seconds the search took."""
    t0 = time.perf_counter()
    candidates = list(range(min(len(train), int(cfg.report.max_candidates))))
    scores = {}
    for i in candidates:
        others = [train[j] for j in range(len(train)) if j != i] or [train[i]]
        scores[i] = score_pairs(prompted("plain", [i]), others, rows.ignore)["mIoU"]
    best = max(candidates, key=lambda i: (scores[i], -i))
    return best, scores[best], time.perf_counter() - t0


def make_report(cfg: DictConfig) -> dict:
    """Score the rows of the module docstring on one scene, write the tuned prompt and the JSON
    report; returns the report."""
    tune_config(cfg, **({"init": "pair"} if str(cfg.init) == "best" else {}))  # fail before any work
    scene = _scene(cfg)
    out = output_path(cfg)
    tr, ho = split_pairs(len(scene.pairs), float(cfg.report.holdout), int(cfg.seed))
    if not ho:
        raise InputError(f"report.holdout={cfg.report.holdout}: holds out no image")
    train, rows = [scene.pairs[i] for i in tr], _Rows([scene.pairs[i] for i in ho],
                                                       cfg.get("ignore_index"))
    if scene.class_ids is None:  # every id of the training masks, so real pairs fit the palette
        ids = np.unique(np.concatenate([np.unique(lab) for _, lab in train]))
        scene.class_ids = [int(i) for i in ids if i not in (0, rows.ignore)]
    device = resolve_device(cfg.device)
    precision = resolve_precision(str(cfg.precision), device)
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=device)

    def prompted(strategy: str, idx: list[int]) -> FewShotSegmenter:
        seg = FewShotSegmenter(model, strategy=strategy, precision=precision,
                               seg_type=scene.seg_type, refine=cfg.get("refine", "auto"))
        seg.set_prompts([train[i][0] for i in idx], [train[i][1] for i in idx])
        return seg

    best, best_miou, seconds = _best_single_pair(cfg, rows, prompted, train)
    rows.score("best_single_pair", prompted("plain", [best]), seconds,
               chosen=scene.files[tr[best]], train_mIoU=best_miou)
    rows.score(f"feature_ensemble@{len(train)}", prompted("feature_ensemble",
                                                          list(range(len(train)))), 0.0)
    from_best = str(cfg.init) == "best"  # start from the best single pair found above
    sub = Scene(train, [scene.files[i] for i in tr], scene.source, scene.class_ids,
                scene.class_names, scene.seg_type)
    prompt, paths = _tuned_rows(cfg, model, sub, rows, precision,
                                train[best] if from_best else None, out)
    report = {
        "scene": scene.source, "model": str(cfg.model.name),
        "checkpoint": str(cfg.checkpoint or cfg.model.get("checkpoint")),
        "classes": dict(zip(map(str, prompt.class_ids), prompt.class_names)),
        "train": sub.files, "held_out": [scene.files[i] for i in ho],
        "tuning": {**{k: prompt.summary[k] for k in ("steps", "seconds", "final_loss",
                                                      "best_val_miou", "best_step", "device",
                                                      "precision")},
                   "init": (f"best single pair ({scene.files[tr[best]]})" if from_best
                            else str(cfg.init)),
                   "config": prompt.summary["config"]},
        "rows": rows.rows, "prompt": str(paths[0]),
    }
    report_path = Path(f"{out.with_suffix('')}_report.json")
    atomic_write_bytes(report_path, json.dumps(report, indent=1).encode())
    _print_table(report, len(train), len(ho), prompt.summary, report_path)
    return report


def _tuned_rows(cfg: DictConfig, model: SegGPT, sub: Scene, rows: _Rows, precision: str,
                init_pair: LabeledImage | None, out: Path) -> tuple:
    """Tune on the training pairs, write the prompt files, score ``tuned`` and
    ``tuned+feature_ensemble@K``; returns the prompt and the written paths."""
    prompt, tuner = tune(cfg, model, sub, init_pair)
    paths = write_prompt_files(prompt, tuner.history, out)
    seg = FewShotSegmenter(model, strategy="tuned", precision=precision, refine=cfg.get("refine", "auto"))
    seg.set_tuned_prompt(prompt)
    rows.score("tuned", seg, prompt.summary["seconds"], steps=prompt.summary["steps"])
    seg.set_tuned_prompt(prompt, [p[0] for p in sub.pairs], [p[1] for p in sub.pairs])
    rows.score(f"tuned+feature_ensemble@{len(sub.pairs)}", seg, prompt.summary["seconds"])
    return prompt, paths


def _print_table(report: dict, n_train: int, n_held: int, summary: dict, path: Path) -> None:
    print(f"{report['scene']}: {n_train} training / {n_held} held-out image(s), model "
          f"{report['model']}")
    print(f"{'row':32s} {'held-out mIoU':>13s} {'prepare s':>10s} {'predict s':>10s}")
    for name, row in report["rows"].items():
        print(f"{name:32s} {row['mIoU']:13.4f} {row['prepare_seconds']:10.1f} "
              f"{row['predict_seconds']:10.1f}")
    print(f"tuning: {summary['steps']} steps in {summary['seconds']:.1f} s "
          f"({summary['device']}, {summary['precision']}) -> {path}")


def run(cfg: DictConfig) -> int:
    """:func:`make_report` as a job (exit code 0)."""
    make_report(cfg)
    return 0
