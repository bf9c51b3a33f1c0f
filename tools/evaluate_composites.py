#!/usr/bin/env python
"""Two-class photo composites: real multi-class few-shot episodes built from a one-class folder set.

    python tools/evaluate_composites.py --root ../shared/data_train/pascal_voc_coseg --classes Bus,Monitor,Sheep
        [--episodes 60] [--seed 0] [--checkpoint W] [--model default] [--threads 1]

Each episode draws two classes A and B and two photos of each (PASCAL VOC co-segmentation layout:
``ROOT/Pascal_10/<class>/*.jpg`` with masks ``ROOT/eval_pascal_10/<class>/*.png``, or an FSS-1000 layout of one
folder per class with ``X.jpg`` + ``X.png``), resized to 192 x 192 each: the prompt is ``[A1 | B1]`` with ids 1 and 2,
the query ``[B2 | A2]`` (sides swapped, so position does not tell the class). Scored as the few-shot evaluation
scores a generated multi-class episode (both ids, intersections and unions summed over the episodes), with region
assignment (``assign=auto``, the shipped model's region matcher) and without it (``none``) on the same episodes.
docs/training "Region matcher".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def class_pairs(root: Path, name: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` files of one class in either layout (see the module docstring)."""
    if (root / "Pascal_10" / name).is_dir():
        imgs = sorted((root / "Pascal_10" / name).glob("*.jpg"))
        return [(p, root / "eval_pascal_10" / name / f"{p.stem}.png") for p in imgs
                if (root / "eval_pascal_10" / name / f"{p.stem}.png").is_file()]
    imgs = sorted((root / name).glob("*.jpg"))
    return [(p, p.with_suffix(".png")) for p in imgs if p.with_suffix(".png").is_file()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--classes", required=True, help="comma-separated class folder names (two or more)")
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="default")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    from tqdm import tqdm

    from painter_seg import build_model
    from painter_seg.apps.few_shot import FewShotSegmenter
    from painter_seg.errors import InputError
    from painter_seg.evaluation.few_shot import score_episode
    from painter_seg.evaluation.miou import FewShotMeter
    from painter_seg.io.images import load_image
    from painter_seg.io.masks import load_mask

    torch.set_num_threads(args.threads)
    try:
        classes = [c for c in args.classes.split(",") if c]
        pairs = {c: class_pairs(args.root, c) for c in classes}
        short = [c for c, p in pairs.items() if len(p) < 2]
        if len(classes) < 2 or short:
            raise InputError(f"{args.root}: need two or more classes with two or more image + mask pairs each "
                             f"(too few: {short or classes})")

        def load(pair):
            img = cv2.resize(load_image(pair[0]), (192, 192), interpolation=cv2.INTER_AREA)
            m = (load_mask(pair[1]).labels > 0).astype(np.uint8)
            return img, cv2.resize(m, (192, 192), interpolation=cv2.INTER_NEAREST).astype(np.int64)

        model = build_model(args.model, checkpoint=args.checkpoint)
        rows = {"assign=auto": FewShotSegmenter(model), "assign=none": FewShotSegmenter(model, assign="none")}
        meters = {k: FewShotMeter() for k in rows}
        rng = np.random.default_rng(args.seed)
        for _ in tqdm(range(args.episodes), desc="composites"):
            a, b = rng.choice(classes, 2, replace=False)
            (a1, ma1), (a2, ma2) = (load(pairs[a][i]) for i in rng.choice(len(pairs[a]), 2, replace=False))
            (b1, mb1), (b2, mb2) = (load(pairs[b][i]) for i in rng.choice(len(pairs[b]), 2, replace=False))
            prompt, prompt_mask = np.hstack([a1, b1]), np.hstack([ma1, 2 * mb1])
            query, gt = np.hstack([b2, a2]), np.hstack([2 * mb2, ma2])
            for key, seg in rows.items():
                seg.set_prompts([prompt], [prompt_mask])
                score_episode(meters[key], "composite", seg.predict(query).labels, gt)
    except (InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, m in meters.items():
        print(f"{key}: mIoU {100 * m.miou():.2f} over {args.episodes} two-class composites")
    return 0


if __name__ == "__main__":
    sys.exit(main())
