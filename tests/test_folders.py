"""Folder data-set readers: every layout built in tmp_path, then the real sets of shared/data."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from painter_seg.data.folders import (
    DavisSequences,
    davis_sequence,
    detect_layout,
    list_davis_sequences,
    load_few_shot_folder,
)
from painter_seg.errors import InputError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def img(path: Path, mode: str = "RGB") -> Path:
    """Write a tiny image (jpg/png by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (4, 4, 3) if mode == "RGB" else (4, 4)
    Image.fromarray(np.zeros(shape, np.uint8), mode=mode).save(path)
    return path


def names(pairs):
    return [(i.name, m.name) for i, m in pairs]


# ------------------------------------------------------------------------------ synthetic layouts


def test_fss1000_layout(tmp_path):
    for n in (1, 2, 10):
        img(tmp_path / "cat" / f"{n}.jpg")
        img(tmp_path / "cat" / f"{n}.png", "L")
    img(tmp_path / "dog" / "1.jpg")
    img(tmp_path / "dog" / "1.png", "L")
    img(tmp_path / "dog" / "3.jpg")  # no mask
    assert detect_layout(tmp_path) == "fss1000"
    with pytest.warns(UserWarning, match="no mask found"):
        ds = load_few_shot_folder(tmp_path)
    assert list(ds) == ["cat", "dog"]
    assert names(ds["cat"]) == [("1.jpg", "1.png"), ("2.jpg", "2.png"), ("10.jpg", "10.png")]
    assert names(ds["dog"]) == [("1.jpg", "1.png")]


def test_perseg_layout(tmp_path):
    for obj, n in (("backpack", 3), ("cat", 2)):
        for i in range(n):
            img(tmp_path / "Images" / obj / f"{i:02d}.jpg")
            img(tmp_path / "Annotations" / obj / f"{i:02d}.png", "L")
    assert detect_layout(tmp_path) == "perseg"
    ds = load_few_shot_folder(tmp_path, layout="perseg")
    assert {k: len(v) for k, v in ds.items()} == {"backpack": 3, "cat": 2}
    assert names(ds["cat"]) == [("00.jpg", "00.png"), ("01.jpg", "01.png")]
    assert ds["cat"][0][0].parent == tmp_path / "Images" / "cat"


def test_flat_pairs_layout(tmp_path):
    img(tmp_path / "cat_00.jpg")
    img(tmp_path / "cat_00.png", "L")
    img(tmp_path / "cat_01.jpg")
    img(tmp_path / "cat_01.png", "L")
    img(tmp_path / "hmbb_1.jpg")
    img(tmp_path / "hmbb_1_target.png")
    img(tmp_path / "video_1.jpg")
    img(tmp_path / "video_1_target.png")
    (tmp_path / "video_1.mp4").write_bytes(b"\x00")  # ignored
    img(tmp_path / "lonely_3.jpg")  # no mask
    assert detect_layout(tmp_path) == "flat_pairs"
    with pytest.warns(UserWarning, match="lonely_3.jpg: no mask found"):
        ds = load_few_shot_folder(tmp_path)
    assert list(ds) == ["cat", "hmbb", "video"]
    assert names(ds["cat"]) == [("cat_00.jpg", "cat_00.png"), ("cat_01.jpg", "cat_01.png")]
    assert names(ds["hmbb"]) == [("hmbb_1.jpg", "hmbb_1_target.png")]
    assert names(ds["video"]) == [("video_1.jpg", "video_1_target.png")]


def test_flat_pairs_png_image_with_target(tmp_path):
    img(tmp_path / "scan_1.png")
    img(tmp_path / "scan_1_target.png")
    assert names(load_few_shot_folder(tmp_path)["scan"]) == [("scan_1.png", "scan_1_target.png")]


@pytest.mark.parametrize("dirs", [("images", "masks"), ("image", "label")])
def test_images_masks_layout(tmp_path, dirs):
    root = tmp_path / "polyps"
    img(root / dirs[0] / "a.jpg")
    img(root / dirs[0] / "b.png")
    img(root / dirs[0] / "c.jpg")  # no mask
    img(root / dirs[1] / "a.jpg", "L")  # JPEG masks are allowed
    img(root / dirs[1] / "b.png", "L")
    assert detect_layout(root) == "images_masks"
    with pytest.warns(UserWarning, match="no mask found"):
        ds = load_few_shot_folder(root)
    assert list(ds) == ["polyps"]
    assert names(ds["polyps"]) == [("a.jpg", "a.jpg"), ("b.png", "b.png")]
    assert ds["polyps"][0][1].parent.name == dirs[1]


@pytest.mark.parametrize("variant", ["480p", "flat", "images_masks"])
def test_davis_layouts(tmp_path, variant):
    img_dir, ann_dir = {
        "480p": ("JPEGImages/480p", "Annotations/480p"),
        "flat": ("JPEGImages", "Annotations"),
        "images_masks": ("images", "masks"),
    }[variant]
    for seq, n in (("bike", 3), ("judo", 5)):
        for t in range(n):
            img(tmp_path / img_dir / seq / f"{t:05d}.jpg")
        img(tmp_path / ann_dir / seq / "00000.png", "L")
    img(tmp_path / ann_dir / "judo" / "00004.png", "L")
    assert list_davis_sequences(tmp_path) == ["bike", "judo"]
    frames, anns = davis_sequence(tmp_path, "judo")
    assert [f.name for f in frames] == [f"{t:05d}.jpg" for t in range(5)]
    assert [a.name for a in anns] == ["00000.png", "00004.png"]
    seqs = DavisSequences(tmp_path)
    assert len(seqs) == 2 and "bike" in seqs and len(seqs["bike"][0]) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # images/ + masks/ warns about unannotated frames
        ds = load_few_shot_folder(tmp_path)
    assert {k: len(v) for k, v in ds.items()} == {"bike": 1, "judo": 2}
    with pytest.raises(InputError, match="no such sequence"):
        davis_sequence(tmp_path, "nope")


def test_errors(tmp_path):
    with pytest.raises(InputError) as err:
        load_few_shot_folder(tmp_path / "missing")
    assert str(err.value).startswith(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no known layout"):
        load_few_shot_folder(tmp_path / "empty")
    with pytest.raises(InputError, match="no image/mask pairs"):
        load_few_shot_folder(tmp_path / "empty", layout="flat_pairs")
    with pytest.raises(InputError, match="unknown layout"):
        load_few_shot_folder(tmp_path, layout="voc")
    with pytest.raises(InputError, match="not a DAVIS layout"):
        list_davis_sequences(tmp_path / "empty")


# ---------------------------------------------------------------------------------- real data


REAL = {
    "fss1000": ("fss1000", {"apple": 10, "basketball": 10, "eiffel_tower": 5}),
    "persam_examples": ("flat_pairs", {"cat": 3, "colorful_sneaker": 3, "duck_toy": 3}),
    "seggpt_examples": ("flat_pairs", {"hmbb": 3, "video": 3}),
    "kvasir_seg": ("images_masks", {"kvasir_seg": 5}),
    "isbi2012_membrane": ("images_masks", {"isbi2012_membrane": 20}),
    "davis2016": ("davis", {"blackswan": 50, "camel": 90, "car-shadow": 40, "dog": 60,
                            "kite-surf": 50}),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_sets(name):
    root = SHARED / name
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    layout, counts = REAL[name]
    assert detect_layout(root) == layout
    ds = load_few_shot_folder(root)
    assert {k: len(v) for k, v in ds.items()} == counts
    for image, mask in (p for pairs in ds.values() for p in pairs):
        assert image.is_file() and mask.is_file() and image != mask
    if name == "seggpt_examples":
        assert names(ds["hmbb"])[2] == ("hmbb_3.jpg", "hmbb_3_target.png")
    if name == "fss1000":
        assert names(ds["apple"])[-1] == ("10.jpg", "10.png")


def test_real_davis_sequences():
    davis, cutie = SHARED / "davis2016", SHARED / "cutie_examples"
    if not davis.is_dir() or not cutie.is_dir():
        pytest.skip("shared/data/davis2016 or cutie_examples not present")
    assert list_davis_sequences(davis) == ["blackswan", "camel", "car-shadow", "dog", "kite-surf"]
    frames, anns = davis_sequence(davis, "camel")
    assert len(frames) == 90 and len(anns) == 90
    assert [f.stem for f in frames] == [a.stem for a in anns]
    assert list_davis_sequences(cutie) == ["bike", "judo"]
    frames, anns = davis_sequence(cutie, "judo")
    assert len(frames) == 16 and [a.stem for a in anns] == ["00000", "00005", "00008", "00013"]
    assert len(davis_sequence(cutie, "bike")[1]) == 1
    with pytest.warns(UserWarning, match="no mask found"):  # unannotated frames are skipped
        ds = load_few_shot_folder(cutie)
    assert {k: len(v) for k, v in ds.items()} == {"bike": 1, "judo": 4}


# ------------------------------------------------------------- training photo sets (shared/data_train)
DATA_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data_train"


def test_instance_ids_from_components():
    from painter_seg.data.in_context.real import IGNORE, instance_ids

    fg = np.zeros((100, 100), bool)
    fg[10:40, 10:40] = True  # 900 px: id 1
    fg[60:80, 60:80] = True  # 400 px: id 2
    fg[0, 99] = True  # 1 px: below 0.2% of the image, ignored
    ids = instance_ids(fg)
    assert ids[20, 20] == 1 and ids[70, 70] == 2 and ids[0, 99] == IGNORE and ids[50, 50] == 0
    assert set(np.unique(ids)) == {0, 1, 2, IGNORE}


@pytest.fixture(scope="module")
def data_train() -> Path:
    if not (DATA_TRAIN / "pascal_voc_coseg").is_dir():
        pytest.skip("../shared/data_train is not present")
    return DATA_TRAIN


def test_pascal_holdout_classes_never_drawn(data_train):
    import torch

    from painter_seg.data.in_context import PASCAL_HOLDOUT, pascal_voc_coseg_dataset

    train = pascal_voc_coseg_dataset(data_train / "pascal_voc_coseg", length=8, half_size=(32, 32))
    held = pascal_voc_coseg_dataset(data_train / "pascal_voc_coseg", split="holdout", length=8,
                                    half_size=(32, 32))
    assert len(PASCAL_HOLDOUT) == 3 and not set(train.names) & set(PASCAL_HOLDOUT)
    assert sorted(held.names) == sorted(PASCAL_HOLDOUT) and len(train.names) == 16
    held_files = {p for name in PASCAL_HOLDOUT for pair in held.groups[name] for p in pair}
    loaded = []
    train._load = lambda pair, f=train._load: loaded.append(pair) or f(pair)  # spy on file reads
    for i in range(8):
        item = train[i]
        assert all(torch.equal(item[k], train[i][k]) for k in item)  # fixed seed, same sample
    assert loaded and not {p for pair in loaded for p in pair} & held_files
    assert all(p[0].parent.name not in PASCAL_HOLDOUT for p in loaded)
    with pytest.raises(InputError, match="unknown PASCAL classes"):
        pascal_voc_coseg_dataset(data_train / "pascal_voc_coseg", holdout=["Cow"])


def test_real_training_sets_make_samples(data_train):
    from painter_seg.data.in_context import (
        cihp_parts_dataset,
        pascal_voc_coseg_dataset,
        weizmann_horses_dataset,
    )

    inst = pascal_voc_coseg_dataset(data_train / "pascal_voc_coseg", instances=True, length=4,
                                    half_size=(32, 32))
    horses = weizmann_horses_dataset(data_train / "weizmann_horses", length=4, half_size=(32, 32))
    cihp = cihp_parts_dataset(data_train / "cihp_samples", length=4, half_size=(64, 32))
    assert inst.seg_type == 1 and inst.recipe.same_image_p == 1.0 and inst.recipe.ignore_index == 255
    assert len(horses.groups["horse"]) == 327  # horse318 skipped
    assert not any(p[0].stem == "horse318" for p in horses.groups["horse"])
    assert len(cihp.groups["cihp"]) == 5 and cihp.seg_type == 0
    img, lab = cihp._load(cihp.groups["cihp"][0])
    assert img.shape[:2] == lab.shape and lab.max() <= 19 and len(np.unique(lab)) > 3
    img, lab = horses._load(horses.groups["horse"][0])
    assert img.shape[:2] == lab.shape and set(np.unique(lab)) == {0, 1}
    for ds, h in ((inst, 32), (horses, 32), (cihp, 64)):
        assert ds[0]["imgs"].shape == (3, 2 * h, 32)
