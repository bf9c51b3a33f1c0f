"""The evaluation job (``painter-seg evaluate``): few-shot mIoU of ``strategy@K`` rows with trivial baselines
(``task=few_shot``), or video J&F (``task=vos``, :mod:`painter_seg.jobs.evaluate_vos`)."""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from omegaconf import DictConfig, ListConfig
from tqdm import tqdm

from ..apps.few_shot import FewShotSegmenter
from ..build import build_model
from ..errors import InputError
from ..evaluation.few_shot import (
    BASELINES,
    EvalEpisode,
    folder_episodes,
    parse_rows,
    score_baselines,
    score_episode,
    synthetic_episodes,
)
from ..evaluation.miou import FewShotMeter
from ..io.files import atomic_path, ensure_output_dir
from ..utils.runtime import resolve_device

__all__ = ["run", "run_few_shot"]


def run(cfg: DictConfig) -> int | None:
    """Dispatch on ``cfg.task``: ``few_shot`` or ``vos``."""
    if cfg.task == "few_shot":
        run_few_shot(cfg)
        return 0
    if cfg.task == "vos":
        from . import evaluate_vos

        _check_vos(cfg, evaluate_vos.METHODS)
        return evaluate_vos.run(cfg)
    raise InputError(f"task={cfg.task}: expected few_shot or vos")


def _check_vos(cfg: DictConfig, methods: tuple[str, ...]) -> None:
    """``clips`` and ``methods`` of ``task=vos``, before folders are written or a model is built."""
    clips = cfg.get("clips")
    if clips is not None and (isinstance(clips, bool) or not isinstance(clips, int) or clips < 0):
        raise InputError(f"clips={clips}: expected a number of generated clips >= 1 (or null)")
    seed = cfg.get("clips_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"clips_seed={seed}: expected the first clip's seed, an integer >= 0")
    chosen = cfg.get("methods")
    chosen = [chosen] if isinstance(chosen, str) else list(chosen or [])
    bad = [m for m in chosen if m not in methods]
    if bad or not chosen:
        raise InputError(f"methods={chosen}: expected some of {', '.join(methods)}")


def _check_few_shot(cfg: DictConfig) -> None:
    """Counts and options of ``task=few_shot``, before data is read or a model is built."""
    from ..codec import SegType, resolve_refine

    SegType.parse(cfg.seg_type)
    resolve_refine(cfg.get("refine", "auto"), (1, 1))
    if int(cfg.episodes_per_class) < 1:
        raise InputError(f"episodes_per_class={cfg.episodes_per_class}: expected >= 1")
    data = cfg.get("data") or {}
    if data.get("source") == "synthetic" and data.get("size") is not None:
        size = data.get("size")
        size = list(size) if isinstance(size, (list, ListConfig)) else None
        if size is None or len(size) != 2 or not all(isinstance(v, int) and v >= 32 for v in size):
            raise InputError(f"data.size={data.get('size')}: expected [height, width], each >= 32")


def _rows(cfg: DictConfig) -> list[str] | None:
    """``rows`` as a list (one string is one row: ``rows=plain@1``); None when not set."""
    rows = cfg.get("rows")
    if rows is None:
        return None
    if isinstance(rows, str):
        return [rows]
    if isinstance(rows, (list, ListConfig)):
        return list(rows)
    raise InputError(f"rows={rows}: expected a list such as [plain@1,feature_ensemble@5]")


def _episodes(cfg: DictConfig, shots: int) -> tuple[object, str, int | None]:
    """The episodes of ``cfg.data`` (held-out generated or a folder set), a description and their count."""
    data = cfg.get("data") or {"source": "folder"}
    if data.get("source") == "synthetic":
        num = int(data.get("episodes", 300))
        episodes = synthetic_episodes(num, shots, int(cfg.seed), data.get("size", (224, 224)),
                                      data.get("kinds"))
        return episodes, f"synthetic held-out episodes (seed {cfg.seed})", num
    if data.get("source") == "folder":
        if not cfg.root:
            raise InputError("give root=<folder data set> (FSS-1000, PerSeg, flat pairs or images/masks "
                             "layout), or data=synthetic")
        episodes = folder_episodes(Path(cfg.root), shots, int(cfg.episodes_per_class), int(cfg.seed),
                                   str(cfg.seg_type))
        return episodes, str(cfg.root), None
    raise InputError(f"data.source={data.get('source')}: expected folder or synthetic")


def _segmenters(cfg: DictConfig, rows: list[tuple[str, int]]) -> dict[str, tuple[int, FewShotSegmenter]]:
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=resolve_device(cfg.device))
    out = {}
    for name, k in rows:
        if name == "plain" and k > 1:
            raise InputError(f"rows: plain@{k}: the plain strategy takes 1 prompt; use an ensemble")
        out[f"{name}@{k}"] = (k, FewShotSegmenter(model, strategy=name, precision=cfg.precision,
                                                       refine=cfg.get("refine", "auto"),
                                                       assign=cfg.get("assign", "auto")))
    return out


def _score(ep: EvalEpisode, segmenters: dict, meters: dict[str, FewShotMeter], seconds: dict) -> None:
    q_img, gt = ep.query
    for key, (k, seg) in segmenters.items():
        t0 = time.perf_counter()
        seg.set_prompts([p[0] for p in ep.prompts[:k]], [p[1] for p in ep.prompts[:k]],
                        seg_type=ep.seg_type)
        pred = seg.predict(q_img).labels
        seconds[key] += time.perf_counter() - t0
        score_episode(meters[key], ep.name, pred, gt)
    score_baselines(meters, ep)


def run_few_shot(cfg: DictConfig) -> dict:
    """mIoU / FB-IoU of one or more ``strategy@K`` rows and the trivial baselines on the same episodes;
    prints a table and writes ``few_shot_report.json`` to ``cfg.output_dir``."""
    rows = parse_rows(_rows(cfg), cfg.strategy.name, cfg.shots)
    _check_few_shot(cfg)
    shots = max(k for _, k in rows)
    episodes, source, num = _episodes(cfg, shots)
    first = next(iter(episodes), None)  # data errors surface before the model is built
    if first is None:
        raise InputError(f"{source}: no episode to score (a class needs at least {shots + 1} image/mask "
                         f"pairs for {shots} shot(s))")
    episodes = itertools.chain([first], episodes)
    out = ensure_output_dir(Path(cfg.output_dir))
    segmenters = _segmenters(cfg, rows)
    meters = {key: FewShotMeter() for key in [*segmenters, *BASELINES]}
    seconds = dict.fromkeys(segmenters, 0.0)
    for ep in tqdm(episodes, total=num, desc="episodes"):
        _score(ep, segmenters, meters, seconds)
    report = {"data": source, "shots": shots, "seed": int(cfg.seed),
              "model": str(cfg.model.name), "checkpoint": str(cfg.checkpoint or cfg.model.get("checkpoint")),
              "rows": {key: {"mIoU": m.miou(), "FB-IoU": m.fb_iou(), "per_class": m.class_iou(),
                             "pairs": m.num_episodes,
                             **({"s_per_episode": seconds[key] / max(1, m.num_episodes)}
                                if key in seconds else {})}
                       for key, m in meters.items()}}
    print(f"{'row':28s} {'mIoU':>7s} {'FB-IoU':>7s}  scored pairs")
    for key, r in report["rows"].items():
        print(f"{key:28s} {100 * r['mIoU']:7.2f} {100 * r['FB-IoU']:7.2f}  {r['pairs']}")
    with atomic_path(out / "few_shot_report.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    return report
