"""The checkpoint conversion job (``painter-seg convert``): change a SegGPT checkpoint's layout and print its
parameter count.

    painter-seg convert IN OUT [--to original|hf|safetensors] [--model NAME] [--dtype fp16]

IN: original ``.pth`` (``{"model": ...}``), a transformers snapshot folder / ``model.safetensors`` /
``pytorch_model.bin``, or our safetensors. OUT's layout comes from ``--to`` or its name: ``*.pth``/``*.pt`` ->
original, a folder or ``model.safetensors`` -> transformers, other ``*.safetensors`` -> ours. With ``--model``
the tensors are also checked strictly against that model config. IN is never modified.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..checkpoint import LAYOUTS, check_state_dict, read_state_dict, save_checkpoint
from ..errors import InputError
from ..io.files import check_output_dir, is_inside, same_file
from . import ArgumentParser


def infer_layout(out: Path) -> str:
    if out.suffix in (".pth", ".pt"):
        return "original"
    if out.suffix == "" or out.is_dir() or out.name == "model.safetensors":
        return "hf"
    if out.suffix == ".safetensors":
        return "safetensors"
    raise InputError(f"{out}: cannot tell the output layout from the name; pass --to {{{','.join(LAYOUTS)}}}")


def _check_output(src: Path, dst: Path, layout: str) -> None:
    """Before reading anything big: ``dst`` can be written in ``layout`` (a file layout is not a folder; a
    transformers folder is not a file; no file stands where a folder must be) and writes nothing into the
    input (a transformers snapshot folder included)."""
    folder = layout == "hf" and (dst.is_dir() or dst.suffix == "")
    out_file = dst / "model.safetensors" if folder else dst
    if same_file(out_file, src):
        raise InputError(f"{dst}: output would overwrite the input checkpoint")
    if src.is_dir() and is_inside(out_file, src):
        raise InputError(f"{dst}: output lies inside the input checkpoint folder {src}")
    if folder:
        check_output_dir(dst)
    elif dst.is_dir():
        raise InputError(f"{dst}: is a folder; the {layout} layout is one file (name a file, or --to hf)")
    else:
        check_output_dir(dst.parent)


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="painter-seg convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="input checkpoint (file or transformers folder)")
    ap.add_argument("dst", help="output file or folder")
    ap.add_argument("--to", choices=LAYOUTS, default=None, help="output layout (default: from the name)")
    ap.add_argument("--model", default=None, help="check against this model config (e.g. seggpt_vit_large)")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="cast floating tensors")
    args = ap.parse_args(argv)
    try:
        src, dst = Path(args.src), Path(args.dst)
        if same_file(dst, src):
            raise InputError(f"{dst}: output would overwrite the input checkpoint")
        layout = args.to or infer_layout(dst)
        _check_output(src, dst, layout)
        sd, meta = read_state_dict(src)
        if args.model:
            from ..build import build_model

            check_state_dict(build_model(args.model, pretrained=False), sd, str(src), args.model)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(args.dtype or "")
        out = save_checkpoint(sd, dst, layout=layout, dtype=dtype, metadata={
            k: v for k, v in meta.items() if k not in ("format", "layout")})
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(v.numel() for v in sd.values())
    print(f"{src} ({meta['layout']}) -> {out} ({layout}): {len(sd)} tensors, {n:,} parameters")
    return 0

