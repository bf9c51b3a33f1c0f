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
import sys

from painter_seg.cli import main

if __name__ == "__main__":
    main(["tune-report", *sys.argv[1:]])
