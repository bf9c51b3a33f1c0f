#!/usr/bin/env python
"""Prompt tuning: learn a prompt pair for a frozen model from labelled images of one scene.
Config: conf/tune_prompt.yaml. Examples:

    python tools/tune_prompt.py images=scene/images masks=scene/masks output=scene.safetensors \
        steps=300 init=mean
    python tools/tune_prompt.py images=../shared/data/fss1000/apple output=apple.safetensors
    python tools/tune_prompt.py images=../shared/data/persam_examples classes=[cat] output=cat.safetensors

Writes the prompt (OUT.safetensors) and, beside it, OUT_image.png, OUT_mask.png (the learned prompt) and
OUT_curve.png (loss / validation mIoU). Use it with:
    python tools/segment.py strategy=tuned prompt.tuned=OUT.safetensors targets=[...]
Exit code: 0 done, 2 bad inputs/arguments (one line on stderr).
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from painter_seg.utils.cli import run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="tune_prompt")
def main(cfg: DictConfig) -> None:
    from painter_seg.jobs.tune import run

    run_job(run, cfg)


if __name__ == "__main__":
    main()
