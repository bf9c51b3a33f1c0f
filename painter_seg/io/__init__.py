"""File formats: images, masks (palette / colour / grey / soft), atomic output files, video."""

from .files import atomic_path, atomic_write_bytes, ensure_output_dir
from .images import load_image, open_pil, overlay, pil_to_rgb, save_image
from .masks import LoadedMask, load_mask, read_label_png, save_label_png

__all__ = [
    "LoadedMask",
    "atomic_path",
    "atomic_write_bytes",
    "ensure_output_dir",
    "load_image",
    "load_mask",
    "open_pil",
    "overlay",
    "pil_to_rgb",
    "read_label_png",
    "save_image",
    "save_label_png",
]
