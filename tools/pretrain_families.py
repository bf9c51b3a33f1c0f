#!/usr/bin/env python
"""Train the encoder's first blocks on shape families alone (painter_seg.training.family_pretrain).

    OMP_NUM_THREADS=2 python tools/pretrain_families.py --output-dir outputs/train/family_s13a [--minutes 45]
        [--checkpoint W.safetensors] [--resume]

Writes OUTPUT_DIR/model.safetensors (the full model: a painting stage's init_checkpoint), last.pt (resume: the same episodes, optimizer state)
and family_log.csv (the pooled family cross-entropy every 50 steps). docs/training "Stage 13".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model config name (default: the shipped model)")
    ap.add_argument("--checkpoint", default=None, help="weights to start from (default: the config's own)")
    ap.add_argument("--output-dir", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget of this run (all runs together)")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt (the same episodes, optimizer state)")
    args = ap.parse_args(argv)

    from painter_seg import build_model
    from painter_seg.errors import InputError
    from painter_seg.training.family_pretrain import FamilyPretrainConfig, pretrain_families

    try:
        cfg = FamilyPretrainConfig(layer=args.layer, lr=args.lr, batch_size=args.batch_size, max_steps=args.steps,
                                   max_minutes=args.minutes, precision=args.precision)
        model = build_model(args.model, checkpoint=args.checkpoint)
        res = pretrain_families(model, cfg, args.output_dir, resume=args.resume)
    except (InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"step {res['step']}, {res['seconds'] / 60:.1f} min, family loss {res['loss']:.4f}: "
          f"{args.output_dir / 'model.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
