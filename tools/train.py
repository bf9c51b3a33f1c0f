#!/usr/bin/env python
"""Train or fine-tune SegGPT: ``painter-seg train``. Config: conf/train.yaml. Examples:

    python tools/train.py +experiment=tiny_synthetic                   # seggpt_tiny from scratch
    python tools/train.py +experiment=tiny_synthetic resume=true        # continue exactly
    torchrun --nproc_per_node=2 tools/train.py +experiment=smoke        # DDP (gloo on CPU)
    python tools/train.py model=seggpt_vit_large init_checkpoint=seggpt_vit_large.pth \
        data=folders_train data.sets.folders.root=/data/fss1000 train.layer_decay=0.8

Writes train_log.csv, last.pt, model.safetensors and summary.json to output_dir.
Exit code: 0 done, 2 bad arguments or inputs (one line on stderr).
"""
import sys

from painter_seg.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
