#!/usr/bin/env python
"""Speed, memory and bf16/fp16 quality vs the transformers reference: ``painter-seg benchmark`` (``--help`` lists the options)."""
import sys

from painter_seg.cli import main

if __name__ == "__main__":
    main(["benchmark", *sys.argv[1:]])
