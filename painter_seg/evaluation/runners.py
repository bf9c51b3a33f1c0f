"""Evaluation jobs behind ``tools/evaluate.py``: few-shot episodes over folder data sets, and VOS J&F."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from ..errors import InputError
from ..io.files import atomic_path, ensure_output_dir
from ..io.images import load_image
from ..io.masks import load_mask
from .miou import FewShotMeter


def _episodes(dataset: dict, shots: int, per_class: int, seed: int):
    """(class, prompt pairs, query pair) with a fixed seed: for each class, ``per_class`` queries, each with
    ``shots`` other pairs of the same class as prompts."""
    rng = np.random.default_rng(seed)
    for name in sorted(dataset):
        pairs = dataset[name]
        if len(pairs) < shots + 1:
            continue
        for _ in range(per_class):
            idx = rng.permutation(len(pairs))[: shots + 1]
            yield name, [pairs[i] for i in idx[1:]], pairs[idx[0]]


def run_fewshot(cfg: DictConfig) -> dict:
    """mIoU / FB-IoU of a strategy (and of the trivial baselines) on K-shot episodes of a folder data set."""
    from ..apps.few_shot import FewShotSegmenter
    from ..build import build_model
    from ..data.folders import load_fewshot_folder
    from ..utils.runtime import resolve_device

    if not cfg.root:
        raise InputError("give root=<folder data set> (FSS-1000, PerSeg, flat pairs or images/masks layout)")
    dataset = load_fewshot_folder(Path(cfg.root))
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=resolve_device(cfg.device))
    meters = {cfg.strategy.name: FewShotMeter(), "baseline_copy_prompt_mask": FewShotMeter(),
              "baseline_all_foreground": FewShotMeter()}
    seg = FewShotSegmenter(model, strategy=cfg.strategy.name, seg_type=cfg.seg_type,
                           precision=cfg.precision)
    for name, prompts, (qi, qm) in tqdm(list(_episodes(dataset, cfg.shots, cfg.episodes_per_class, cfg.seed)),
                                        desc="episodes"):
        gt = (load_mask(qm).labels > 0).astype(np.int64)
        imgs = [load_image(p) for p, _ in prompts]
        masks = [(load_mask(m).labels > 0).astype(np.int64) for _, m in prompts]
        seg.set_prompts(imgs, masks)
        pred = (seg.predict(load_image(qi)).labels > 0).astype(np.int64)
        meters[cfg.strategy.name].update(name, pred, gt)
        import cv2

        copied = cv2.resize(masks[0].astype(np.uint8), gt.shape[::-1], interpolation=cv2.INTER_NEAREST)
        meters["baseline_copy_prompt_mask"].update(name, copied.astype(np.int64), gt)
        meters["baseline_all_foreground"].update(name, np.ones_like(gt), gt)
    report = {"root": str(cfg.root), "shots": cfg.shots, "seed": cfg.seed, "model": str(cfg.model.name),
              "rows": {k: {"mIoU": m.miou(), "FB-IoU": m.fb_iou(), "per_class": m.class_iou(),
                           "episodes": m.num_episodes} for k, m in meters.items()}}
    print(f"{'method':32s} {'mIoU':>7s} {'FB-IoU':>7s}")
    for k, r in report["rows"].items():
        print(f"{k:32s} {100 * r['mIoU']:7.2f} {100 * r['FB-IoU']:7.2f}")
    out = ensure_output_dir(Path(cfg.output_dir))
    with atomic_path(out / "fewshot_report.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    return report
