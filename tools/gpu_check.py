#!/usr/bin/env python
"""GPU check (ViT-L parity, precisions, throughput, compile, prompt tuning, video): ``painter-seg gpu-check`` (``--help`` lists the options)."""
import sys

from painter_seg.cli import main

if __name__ == "__main__":
    main(["gpu-check", *sys.argv[1:]])
