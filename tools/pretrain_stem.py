#!/usr/bin/env python
"""Train a model's convolutional stem on shape families alone (painter_seg.training.stem_pretrain).

    python tools/pretrain_stem.py --output-dir outputs/train/stem_s15 [--minutes 30] [--episodes 16000]
        [--model default] [--stem 2:32,64,96,128:0,0,1,2] [--checkpoint W.safetensors] [--workers 2] [--resume]
        [--target stem|matcher]

``--target matcher`` trains the model's region matcher instead (``net.region_matcher``, same layers plus its family
head; docs/training "Region matcher"); ``--resume --target matcher`` on a stem run whose time is spent turns its
net into the matcher of OUTPUT_DIR/model.safetensors without training it again.

The model is built from its config with a conv stem (``--stem POOL:WIDTHS:EXTRA``, or the config's own) and its
weights (the stem, new, is not in them: every other tensor must be). Writes OUTPUT_DIR/objects.npz (generated object
windows, reused), stem_log.csv (held-out family accuracy per epoch), last.pt (--resume) and model.safetensors (the
full model with the stem folded in: a painting stage's init_checkpoint). docs/training "Stage 15".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_stem(spec: str) -> dict:
    """``POOL:W1,W2,...:E1,E2,...`` -> ``{"pool", "widths", "extra"}`` (one-line error otherwise)."""
    try:
        pool, widths, extra = spec.split(":")
        return {"pool": int(pool), "widths": [int(w) for w in widths.split(",")],
                "extra": [int(e) for e in extra.split(",")]}
    except ValueError:
        raise ValueError(f"--stem {spec!r}: expected POOL:WIDTHS:EXTRA, e.g. 2:32,64,96,128:0,0,1,2") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model config name (default: the shipped model)")
    ap.add_argument("--stem", default="2:32,64,96,128:0,0,1,2", help="POOL:WIDTHS:EXTRA ('' = the config's own)")
    ap.add_argument("--checkpoint", default=None, help="weights of the rest of the model (default: the config's own)")
    ap.add_argument("--output-dir", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of the training (all runs together)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--episodes", type=int, default=16_000)
    ap.add_argument("--workers", type=int, default=1, help="processes generating the object windows")
    ap.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    ap.add_argument("--target", choices=("stem", "matcher"), default="stem",
                    help="train the conv stem beside the patch embedding, or the region matcher")
    args = ap.parse_args(argv)

    from painter_seg import build_model
    from painter_seg.checkpoint import CheckpointError, load_checkpoint
    from painter_seg.config import load_group
    from painter_seg.errors import InputError
    from painter_seg.training.stem_pretrain import StemPretrainConfig, pretrain_stem

    try:
        overrides = []
        if args.stem:
            s = parse_stem(args.stem)
            key = "net.conv_stem" if args.target == "stem" else "net.region_matcher"
            overrides = [f"{key}.pool={s['pool']}", f"{key}.widths={s['widths']}", f"{key}.extra={s['extra']}"]
        cfg = StemPretrainConfig(episodes=args.episodes, max_epochs=args.epochs, max_minutes=args.minutes)
        model = build_model(args.model, overrides=overrides, pretrained=False)
        source = args.checkpoint or load_group("model", args.model).get("checkpoint")
        if not source:
            raise InputError(f"model {args.model!r} has no default weights: pass --checkpoint")
        report = load_checkpoint(model, source, strict=False)
        new = "stem." if args.target == "stem" else "matcher."
        need = [k for k in model.state_dict() if not k.startswith(new)]  # what it trains need not be in them
        if report.num_tensors not in (len(need), len(model.state_dict())):  # with or without the part it trains
            raise InputError(f"{source}: {report.num_tensors} tensors fit the model, {len(need)} expected")
        res = pretrain_stem(model, cfg, args.output_dir, resume=args.resume, workers=args.workers,
                            target=args.target)
    except (InputError, ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"epoch {res['epoch']}, {res['seconds'] / 60:.1f} min, held-out family accuracy {res['heldout_acc']:.4f} "
          f"(commonest {res['majority']:.4f}, {res['objects']} objects): {args.output_dir / 'model.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
