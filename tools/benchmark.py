#!/usr/bin/env python
"""Speed, memory and bf16/fp16 quality vs transformers: ``painter_seg.jobs.benchmark`` (``--help``)."""
from painter_seg.jobs.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
