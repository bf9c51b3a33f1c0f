#!/usr/bin/env python
"""Video object propagation from a first-frame mask. Config: conf/propagate.yaml. Example:

    python tools/propagate.py video=clip.mp4 first_mask=first.png output_dir=out context_frames=8

Writes one palette PNG per frame (named after the frame, ids of the first mask), overlay.mp4, summary.json.
DAVIS mode: python tools/propagate.py data=davis root=DAVIS output_dir=out (torchrun shards sequences).
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from painter_seg.utils.cli import run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="propagate")
def main(cfg: DictConfig) -> None:
    from painter_seg.jobs.propagate import run

    run_job(run, cfg)


if __name__ == "__main__":
    main()
