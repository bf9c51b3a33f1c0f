#!/usr/bin/env python
"""Video object propagation from a first-frame mask: ``painter-seg propagate``. Config: conf/propagate.yaml.

    python tools/propagate.py video=clip.mp4 first_mask=first.png output_dir=out

Writes one palette PNG per frame (named after the frame, ids of the first mask), overlay.mp4, summary.json.
DAVIS mode: python tools/propagate.py data=davis root=DAVIS output_dir=out (torchrun shards sequences).
"""
import sys

from painter_seg.cli import main

if __name__ == "__main__":
    main(["propagate", *sys.argv[1:]])
