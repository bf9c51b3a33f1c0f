#!/usr/bin/env python
"""GPU check (ViT-L parity, precisions, throughput, compile, tuning, video): ``painter_seg.jobs.gpu_check``."""
from painter_seg.jobs.gpu_check import main

if __name__ == "__main__":
    raise SystemExit(main())
