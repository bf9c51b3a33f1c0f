#!/usr/bin/env python
"""Evaluation: ``painter-seg evaluate``. Config: conf/evaluate.yaml.

    python tools/evaluate.py task=few_shot root=../shared/data/fss1000 shots=1 strategy=plain
    python tools/evaluate.py task=few_shot data=synthetic rows=[plain@1,spatial_ensemble@5,feature_ensemble@5]
    python tools/evaluate.py task=vos pred=out/ gt=DAVIS/Annotations/480p output_dir=eval/
"""
import sys

from painter_seg.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
