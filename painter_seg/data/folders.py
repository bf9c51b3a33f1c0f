"""Readers of image/mask folder data sets into one uniform structure.

A :data:`FewShotDataset` maps a class (or object) name to the sorted list of its
``(image_path, mask_path)`` pairs. :func:`load_few_shot_folder` reads these layouts (auto-detected):

``fss1000``
    ``<root>/<class>/<n>.jpg`` + ``<root>/<class>/<n>.png``.
``perseg``
    ``<root>/Images/<obj>/*.jpg`` + ``<root>/Annotations/<obj>/*.png``, matched by stem (any of the
    image-folder / mask-folder names below, e.g. ``images/<clip>`` + ``masks/<clip>``).
``flat_pairs``
    one folder of ``X.jpg`` + ``X.png`` (or ``X_target.png`` / ``X_mask.png``); the class is the
    stem without its trailing ``_NN`` index (``cat_00`` -> ``cat``, ``hmbb_1`` -> ``hmbb``); a
    purely numeric stem takes the folder's name.
``images_masks``
    ``<root>/images/`` + ``<root>/masks/`` (or ``image/`` + ``label/``, ...) with matching stems,
    any image extension; one class named after ``root``.
``davis``
    ``<root>/JPEGImages[/480p]/<seq>/`` + ``<root>/Annotations[/480p]/<seq>/``: one class per
    sequence, its annotated frames as pairs.

Pairs are sorted by natural order of the image stem (``2`` before ``10``). Images without a mask are
skipped with a warning; a root with no pair at all is an :class:`~painter_seg.errors.InputError`.

For video data, :func:`list_davis_sequences` and :func:`davis_sequence` (or :class:`DavisSequences`)
read the DAVIS layout ``JPEGImages/480p/<seq>/*.jpg`` + ``Annotations/480p/<seq>/*.png``, also
without the resolution level and as ``images/<seq>`` + ``masks/<seq>``.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import InputError

PathLike = str | os.PathLike
Pair = tuple[Path, Path]
FewShotDataset = dict[str, list[Pair]]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = ("_target", "_mask", "_label", "_gt")
IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "jpegimages")
MASK_DIR_NAMES = (
    "masks", "mask", "labels", "label", "annotations", "annotation", "gt", "groundtruth",
)
LAYOUTS = ("auto", "fss1000", "perseg", "flat_pairs", "images_masks", "davis")

__all__ = [
    "IMAGE_EXTS",
    "LAYOUTS",
    "DavisSequences",
    "FewShotDataset",
    "davis_sequence",
    "detect_layout",
    "list_davis_sequences",
    "load_few_shot_folder",
    "pair_folders",
]


def _natural_key(text: str) -> list:
    """Sort key that orders digit runs numerically (``img2`` < ``img10``)."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower())
            for tok in re.split(r"(\d+)", text) if tok]


def _images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (hidden files left out), naturally sorted."""
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder``, naturally sorted."""
    dirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(dirs, key=lambda p: _natural_key(p.name))


def _find_dir(root: Path, names: Sequence[str]) -> Path | None:
    """First sub-folder of ``root`` whose lower-cased name is in ``names`` (in ``names`` order)."""
    by_name = {p.name.lower(): p for p in _subdirs(root)}
    for name in names:
        if name in by_name:
            return by_name[name]
    return None


def _warn_skipped(folder: Path, skipped: list[Path]) -> None:
    """One warning for the images of ``folder`` that have no mask."""
    if skipped:
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        warnings.warn(f"{skipped[0]}{more}: no mask found, skipped ({folder})", stacklevel=3)


def _pair_in_folder(folder: Path) -> tuple[list[Pair], list[Path]]:
    """Pair the images of one folder with sibling masks: ``X.ext`` with ``X_target.png`` (or another
    mask suffix, any image extension), else with ``X.png`` when ``X`` itself is not a PNG.

    Returns:
        ``(pairs, images_without_mask)``.
    """
    files = _images(folder)
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f)
    masks: set = set()
    pairs: dict[Path, Path] = {}
    for f in files:  # suffixed masks: X_target.png belongs to X.*
        low = f.stem.lower()
        for suf in MASK_SUFFIXES:
            if low.endswith(suf) and f.stem[: -len(suf)] in by_stem:
                masks.add(f)
                for img in by_stem[f.stem[: -len(suf)]]:
                    pairs.setdefault(img, f)
                break
    for group in by_stem.values():  # X.jpg + X.png
        pngs = [f for f in group if f.suffix.lower() == ".png"]
        others = [f for f in group if f.suffix.lower() != ".png"]
        if pngs and others:
            masks.add(pngs[0])
            for img in others:
                pairs.setdefault(img, pngs[0])
    images = [f for f in files if f not in masks]
    found = [(img, pairs[img]) for img in images if img in pairs]
    missing = [img for img in images if img not in pairs]
    return found, missing


def _class_of_stem(stem: str, folder: Path) -> str:
    """Class name of a flat-pair stem: the stem without its trailing ``_NN`` (or ``-NN``) index;
    a purely numeric stem takes the folder name."""
    if stem.isdigit():
        return folder.name
    base = re.sub(r"[_-]\d+$", "", stem)
    return base or folder.name


def _sorted_dataset(data: dict[str, list[Pair]]) -> FewShotDataset:
    """Classes in natural order, each pair list naturally sorted by image name."""
    return {name: sorted(pairs, key=lambda p: _natural_key(p[0].name))
            for name, pairs in sorted(data.items(), key=lambda kv: _natural_key(kv[0])) if pairs}


def _load_flat_pairs(root: Path) -> FewShotDataset:
    """``flat_pairs`` layout."""
    pairs, missing = _pair_in_folder(root)
    _warn_skipped(root, missing)
    data: dict[str, list[Pair]] = {}
    for img, mask in pairs:
        data.setdefault(_class_of_stem(img.stem, root), []).append((img, mask))
    return _sorted_dataset(data)


def _load_fss1000(root: Path) -> FewShotDataset:
    """``fss1000`` layout: one sub-folder per class, pairs inside."""
    data: dict[str, list[Pair]] = {}
    for cls in _subdirs(root):
        pairs, missing = _pair_in_folder(cls)
        _warn_skipped(cls, missing)
        data[cls.name] = pairs
    return _sorted_dataset(data)


def _match_by_stem(image_dir: Path, mask_dir: Path) -> tuple[list[Pair], list[Path]]:
    """Pair the images of ``image_dir`` with the masks of ``mask_dir`` of the same stem (a mask
    ``X_target.*`` / ``X_mask.*`` also counts; PNG preferred when several masks share the stem)."""
    masks: dict[str, Path] = {}
    for m in _images(mask_dir):
        stems = [m.stem] + [m.stem[: -len(s)] for s in MASK_SUFFIXES if m.stem.lower().endswith(s)]
        for stem in stems:
            better = m.suffix.lower() == ".png" and stem in masks
            if stem not in masks or (better and masks[stem].suffix.lower() != ".png"):
                masks[stem] = m
    pairs, missing = [], []
    for img in _images(image_dir):
        if img.stem in masks:
            pairs.append((img, masks[img.stem]))
        else:
            missing.append(img)
    return pairs, missing


def _load_images_masks(root: Path) -> FewShotDataset:
    """``images_masks`` layout: one class named after the root folder."""
    image_dir, mask_dir = _find_dir(root, IMAGE_DIR_NAMES), _find_dir(root, MASK_DIR_NAMES)
    if image_dir is None or mask_dir is None:
        raise InputError(
            f"{root}: images_masks layout needs an images/ and a masks/ (or label/) folder"
        )
    pairs, missing = _match_by_stem(image_dir, mask_dir)
    _warn_skipped(image_dir, missing)
    return _sorted_dataset({root.resolve().name: pairs})


def _load_perseg(root: Path) -> FewShotDataset:
    """``perseg`` layout: ``Images/<obj>/`` + ``Annotations/<obj>/``."""
    image_dir, mask_dir = _find_dir(root, IMAGE_DIR_NAMES), _find_dir(root, MASK_DIR_NAMES)
    if image_dir is None or mask_dir is None:
        raise InputError(
            f"{root}: perseg layout needs Images/<obj>/ and Annotations/<obj>/ folders"
        )
    data: dict[str, list[Pair]] = {}
    for obj in _subdirs(image_dir):
        if not (mask_dir / obj.name).is_dir():
            _warn_skipped(obj, _images(obj))
            continue
        pairs, missing = _match_by_stem(obj, mask_dir / obj.name)
        _warn_skipped(obj, missing)
        data[obj.name] = pairs
    return _sorted_dataset(data)


def _load_davis(root: Path) -> FewShotDataset:
    """``davis`` layout: one class per sequence, its annotated frames as pairs."""
    data: dict[str, list[Pair]] = {}
    for seq in list_davis_sequences(root):
        frames, annotations = davis_sequence(root, seq)
        ann = {a.stem: a for a in annotations}
        data[seq] = [(f, ann[f.stem]) for f in frames if f.stem in ann]
    return _sorted_dataset(data)


def _has_images(folder: Path) -> bool:
    """Whether ``folder`` directly holds image files."""
    return any(True for _ in _images(folder))


def detect_layout(root: PathLike) -> str:
    """Guess the layout of ``root``: ``davis``, ``perseg``, ``images_masks``, ``flat_pairs`` or
    ``fss1000``.

    Raises:
        InputError: ``root`` is not a folder, or no layout fits.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data folder not found")
    if _davis_dirs(root, "480p") is not None and (root / "JPEGImages").is_dir():
        return "davis"
    image_dir, mask_dir = _find_dir(root, IMAGE_DIR_NAMES), _find_dir(root, MASK_DIR_NAMES)
    if image_dir is not None and mask_dir is not None:
        if _has_images(image_dir):
            return "images_masks"
        if any(_has_images(d) for d in _subdirs(image_dir)):
            return "perseg"
    if _pair_in_folder(root)[0]:
        return "flat_pairs"
    if any(_pair_in_folder(d)[0] for d in _subdirs(root)):
        return "fss1000"
    raise InputError(
        f"{root}: no known layout (fss1000, perseg, flat_pairs, images_masks, davis) fits "
        "this folder"
    )


def load_few_shot_folder(root: PathLike, layout: str = "auto") -> FewShotDataset:
    """Read an image/mask folder data set.

    Args:
        root: the data set folder.
        layout: ``auto`` (detect), ``fss1000``, ``perseg``, ``flat_pairs``, ``images_masks`` or
            ``davis`` (see the module docstring).

    Returns:
        ``{class name: [(image_path, mask_path), ...]}``, classes and pairs in natural order;
        classes without any pair are left out.

    Raises:
        InputError: unknown layout, missing folder, or no pair found.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise InputError(f"layout={layout!r}: unknown layout, expected one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise InputError(f"{root}: data folder not found")
    if layout == "auto":
        layout = detect_layout(root)
    loader = {
        "fss1000": _load_fss1000, "perseg": _load_perseg, "flat_pairs": _load_flat_pairs,
        "images_masks": _load_images_masks, "davis": _load_davis,
    }[layout]
    data = loader(root)
    if not data:
        raise InputError(f"{root}: no image/mask pairs found ({layout} layout)")
    return data


def pair_folders(image_dir: PathLike, mask_dir: PathLike) -> list[Pair]:
    """Pair the images of ``image_dir`` with the masks of ``mask_dir`` by file stem (``X.jpg`` with
    ``X.png``, ``X_mask.png``, ...; PNG preferred), naturally sorted; images without a mask are
    skipped with a warning.

    Raises:
        InputError: a folder is missing, or no image has a mask.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    for d, what in ((image_dir, "image"), (mask_dir, "mask")):
        if not d.is_dir():
            raise InputError(f"{d}: {what} folder not found")
    pairs, missing = _match_by_stem(image_dir, mask_dir)
    if not pairs:  # the error alone, without a warning per image first
        raise InputError(f"{image_dir}: no image has a mask of the same name in {mask_dir}")
    _warn_skipped(image_dir, missing)
    return sorted(pairs, key=lambda p: _natural_key(p[0].name))


# ----------------------------------------------------------------------------------------- DAVIS


def _seq_root(base: Path, resolution: str) -> Path | None:
    """``base/<resolution>`` when it exists, else ``base`` when it holds sequence folders."""
    if (base / resolution).is_dir():
        return base / resolution
    if base.is_dir() and any(_has_images(d) for d in _subdirs(base)):
        return base
    return None


def _davis_dirs(root: Path, resolution: str) -> tuple[Path, Path] | None:
    """(frames root, annotations root) of a DAVIS-like folder, or ``None``."""
    for img_name, ann_name in (("JPEGImages", "Annotations"), ("images", "masks")):
        img = _seq_root(root / img_name, resolution) if (root / img_name).is_dir() else None
        ann = _seq_root(root / ann_name, resolution) if (root / ann_name).is_dir() else None
        if img is not None and ann is not None:
            return img, ann
    return None


def _require_davis(root: Path, resolution: str) -> tuple[Path, Path]:
    """:func:`_davis_dirs` or an :class:`InputError`."""
    if not root.is_dir():
        raise InputError(f"{root}: DAVIS folder not found")
    dirs = _davis_dirs(root, resolution)
    if dirs is None:
        raise InputError(
            f"{root}: not a DAVIS layout (expected JPEGImages/{resolution}/<seq> + "
            f"Annotations/{resolution}/<seq>, or images/<seq> + masks/<seq>)"
        )
    return dirs


def list_davis_sequences(root: PathLike, resolution: str = "480p") -> list[str]:
    """Names of the sequences (frame folders holding images) of a DAVIS-like folder, sorted."""
    img_root, _ = _require_davis(Path(root), resolution)
    return [d.name for d in _subdirs(img_root) if _has_images(d)]


def davis_sequence(
    root: PathLike, name: str, resolution: str = "480p"
) -> tuple[list[Path], list[Path]]:
    """Frames and annotations of one sequence of a DAVIS-like folder.

    Returns:
        ``(frame_paths, annotation_paths)``, each sorted by name; annotations may cover only some
        frames (e.g. the first one), and are empty when the sequence has no annotation folder.

    Raises:
        InputError: not a DAVIS layout, or no such sequence.
    """
    root = Path(root)
    img_root, ann_root = _require_davis(root, resolution)
    seq_dir = img_root / name
    if not seq_dir.is_dir() or not _has_images(seq_dir):
        raise InputError(f"{seq_dir}: no such sequence (frames folder missing or empty)")
    frames = _images(seq_dir)
    ann_dir = ann_root / name
    annotations = (sorted((p for p in _images(ann_dir) if p.suffix.lower() == ".png"),
                          key=lambda p: _natural_key(p.name)) if ann_dir.is_dir() else [])
    return frames, annotations


class DavisSequences:
    """The sequences of a DAVIS-like folder, as a read-only mapping-like object.

    ``len(seqs)``, ``list(seqs)`` (names), ``seqs["camel"]`` -> ``(frame_paths, annotation_paths)``.
    """

    def __init__(self, root: PathLike, resolution: str = "480p") -> None:
        self.root = Path(root)
        self.resolution = resolution
        self.names = list_davis_sequences(self.root, resolution)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> tuple[list[Path], list[Path]]:
        if name not in self.names:
            raise KeyError(name)
        return davis_sequence(self.root, name, self.resolution)
