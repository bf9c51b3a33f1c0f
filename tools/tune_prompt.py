#!/usr/bin/env python
"""Prompt tuning: learn a prompt pair for a frozen model from labelled images of one scene: ``painter-seg tune``.
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
import sys

from painter_seg.cli import main

if __name__ == "__main__":
    main(["tune", *sys.argv[1:]])
