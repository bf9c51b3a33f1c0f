#!/usr/bin/env python
"""Convert a SegGPT checkpoint between layouts: ``painter-seg convert``.

    python tools/convert_checkpoint.py IN OUT [--to original|hf|safetensors] [--model NAME] [--dtype fp16]
"""
import sys

from painter_seg.cli import main

if __name__ == "__main__":
    main(["convert", *sys.argv[1:]])
