#!/usr/bin/env python
"""Few-shot segmentation from example pairs: ``painter-seg segment``. Config: conf/segment.yaml. Example:

    python tools/segment.py prompt.images=[a.jpg,b.jpg] prompt.masks=[a.png,b.png] \
        targets=[photos/] output_dir=out strategy=feature_ensemble

Writes, per target T: T_mask.png (palette PNG of ids), T_overlay.png, T_paint.png; and summary.json.
Exit code: 0 all targets done, 1 some target failed (listed in summary.json), 2 bad prompts/arguments.
"""
import sys

from painter_seg.cli import main

if __name__ == "__main__":
    main(["segment", *sys.argv[1:]])
