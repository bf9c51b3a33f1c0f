#!/usr/bin/env python
"""Few-shot segmentation from example pairs. Config: conf/segment.yaml. Example:

    python tools/segment.py prompt.images=[a.jpg,b.jpg] prompt.masks=[a.png,b.png] \
        targets=[photos/] output_dir=out strategy=feature_ensemble

Writes, per target T: T_mask.png (palette PNG of ids), T_overlay.png, T_paint.png; and summary.json.
Exit code: 0 all targets done, 1 some target failed (listed in summary.json), 2 bad prompts/arguments.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from painter_seg.utils.cli import run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="segment")
def main(cfg: DictConfig) -> None:
    from painter_seg.apps.few_shot_job import run

    run_job(run, cfg)


if __name__ == "__main__":
    main()
