#!/usr/bin/env python
"""Held-out mIoU of a tuned prompt vs the best single real example pair vs the feature ensemble of all
training pairs, on one scene. Config: conf/tune_prompt.yaml (the keys of tools/tune_prompt.py + report.*).

    python tools/report_prompt_tuning.py report.scene=synthetic output=outputs/report/scene.safetensors
    python tools/report_prompt_tuning.py images=../shared/data/fss1000/apple \
        output=outputs/report/apple.safetensors
    python tools/report_prompt_tuning.py images=../shared/data/persam_examples classes=[cat] \
        report.holdout=0.34 output=outputs/report/cat.safetensors

Prints a table and writes OUT_report.json next to the tuned prompt OUT.safetensors (and its PNGs).
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from painter_seg.utils.cli import run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="tune_prompt")
def main(cfg: DictConfig) -> None:
    from painter_seg.jobs.tune_report import run

    run_job(run, cfg)


if __name__ == "__main__":
    main()
