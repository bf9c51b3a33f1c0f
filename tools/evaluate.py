#!/usr/bin/env python
"""Evaluation. Config: conf/evaluate.yaml.

    python tools/evaluate.py task=fewshot root=../shared/data/fss1000 shots=1 strategy=plain
    python tools/evaluate.py task=fewshot data=synthetic rows=[plain@1,spatial_ensemble@5,feature_ensemble@5]
    python tools/evaluate.py task=vos pred=out/ gt=DAVIS/Annotations/480p output_dir=eval/
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from painter_seg.errors import InputError
from painter_seg.utils.cli import run_job


def _job(cfg: DictConfig) -> None:
    if cfg.task == "fewshot":
        from painter_seg.evaluation.runners import run_fewshot

        run_fewshot(cfg)
    elif cfg.task == "vos":
        from painter_seg.evaluation.vos import evaluate_vos

        if not cfg.pred or not cfg.gt:
            raise InputError("task=vos needs pred=<dir> and gt=<dir>")
        print(json.dumps(evaluate_vos(Path(cfg.pred), Path(cfg.gt), Path(cfg.output_dir)), indent=1))
    else:
        raise InputError(f"task={cfg.task}: expected fewshot or vos")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_job(_job, cfg)


if __name__ == "__main__":
    main()
