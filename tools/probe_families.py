#!/usr/bin/env python
"""Do the model's tokens know the shape family of a generated object? (painter_seg.evaluation.probe)

    OMP_NUM_THREADS=2 python tools/probe_families.py [--checkpoint W.safetensors] [--episodes 800] [--output p.json]

Prints the held-out accuracy of a linear probe from each feature layer's object-averaged query tokens to the
object's shape family, next to the commonest family's share (what a probe that learned nothing scores).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model config name (default: the shipped model)")
    ap.add_argument("--checkpoint", default=None, help="weights file (default: the config's own)")
    ap.add_argument("--episodes", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=None, help="also write the result as JSON here")
    args = ap.parse_args(argv)

    from painter_seg import build_model
    from painter_seg.errors import InputError
    from painter_seg.evaluation.probe import family_probe, format_probe
    from painter_seg.io.files import atomic_path

    try:
        if args.episodes < 4:
            raise InputError(f"--episodes={args.episodes}: expected at least 4")
        model = build_model(args.model, checkpoint=args.checkpoint)
    except (InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = family_probe(model, args.episodes, args.seed)
    print(format_probe(result, args.checkpoint or args.model))
    if args.output:
        with atomic_path(args.output) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
