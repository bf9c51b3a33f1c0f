"""Tests of the procedural episode / clip generator (painter_seg.data.synthetic)."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from PIL import Image

from painter_seg.codec import SegType
from painter_seg.data.synthetic import (
    FAMILIES,
    KINDS,
    SEG_TYPES,
    TEXTURES,
    Episode,
    SyntheticConfig,
    generate_clip,
    generate_episode,
    label_palette,
    make_examples,
)
from painter_seg.io.masks import davis_palette

SEEDS = range(12)


def _arrays(ep: Episode) -> list[np.ndarray]:
    out = []
    for img, lab in ep.prompts + [ep.query]:
        out += [img, lab]
    return out


def _fg_objects(ep: Episode) -> tuple[dict[int, dict], np.ndarray]:
    """Query objects by index, and the object index of every foreground query pixel."""
    objs = {o["index"]: o for o in ep.meta["query_objects"]}
    objmap = ep.meta["query_objmap"]
    return objs, objmap[ep.query[1] > 0]


def test_constants() -> None:
    assert len(FAMILIES) >= 10 and len(TEXTURES) >= 6
    assert set(KINDS) == {"semantic", "instance", "multiclass", "multi_instance", "color",
                          "texture"}
    assert set(SEG_TYPES) == set(KINDS) and all(isinstance(v, SegType) for v in SEG_TYPES.values())
    assert {k for k, v in SEG_TYPES.items() if v == 1} == {"instance", "multi_instance"}
    assert generate_episode(0, "multi_instance", size=(48, 48)).seg_type is SegType.INSTANCE


@pytest.mark.parametrize("kind", KINDS)
def test_episode_deterministic_per_seed(kind: str) -> None:
    a, b = generate_episode(5, kind), generate_episode(5, kind)
    for x, y in zip(_arrays(a), _arrays(b)):
        assert np.array_equal(x, y)
    c = generate_episode(6, kind)
    assert not np.array_equal(a.query[0], c.query[0])
    assert not np.array_equal(a.prompts[0][0], c.prompts[0][0])


def test_random_kind_deterministic() -> None:
    kinds = set()
    for s in range(30):
        a, b = generate_episode(s), generate_episode(s)
        assert a.kind == b.kind and a.kind in KINDS
        assert all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b)))
        kinds.add(a.kind)
    assert len(kinds) >= 4
    cfg = SyntheticConfig(kind_weights={"texture": 1.0})
    assert {generate_episode(s, cfg=cfg).kind for s in range(5)} == {"texture"}


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_ids_present(kind: str) -> None:
    seg_type = {"instance": 1, "multi_instance": 1}.get(kind, 0)
    for s in SEEDS:
        shots = 1 + s % 3
        ep = generate_episode(s, kind, num_shots=shots)
        assert ep.kind == kind and ep.seg_type == seg_type
        assert len(ep.prompts) == shots
        want = set(range(1, ep.num_classes + 1))
        if kind in ("multiclass", "multi_instance"):
            assert 2 <= ep.num_classes <= 4
        else:
            assert ep.num_classes == 1
        for img, lab in ep.prompts + [ep.query]:
            assert img.shape == (224, 224, 3) and img.dtype == np.uint8
            assert lab.shape == (224, 224) and lab.dtype == np.int64
            assert set(np.unique(lab).tolist()) - {0} == want
            for k in want:
                assert (lab == k).sum() >= 30


def test_non_square_size_and_config() -> None:
    cfg = SyntheticConfig(num_objects=(3, 4), families=("star", "ring", "heart", "arrow"),
                          textures=("flat", "dots"), clutter=(0, 0))
    for kind in KINDS:
        ep = generate_episode(3, kind, size=(160, 256), cfg=cfg)
        assert ep.query[0].shape == (160, 256, 3) and ep.prompts[0][1].shape == (160, 256)
        fams = {o["family"] for o in ep.meta["query_objects"]}
        assert fams <= {"star", "ring", "heart", "arrow"}
    with pytest.raises(ValueError):
        generate_episode(0, "nope")
    with pytest.raises(ValueError):
        generate_episode(0, num_shots=0)
    with pytest.raises(ValueError):
        generate_episode(0, cfg=SyntheticConfig(families=("star", "bogus", "ring")))


@pytest.mark.parametrize("kind", ["instance", "multi_instance"])
def test_instance_query_is_one_object(kind: str) -> None:
    whole = []
    for s in SEEDS:
        ep = generate_episode(s, kind)
        objs, _ = _fg_objects(ep)
        lab = ep.query[1]
        for k in range(1, ep.num_classes + 1):
            idx = set(np.unique(ep.meta["query_objmap"][lab == k]).tolist())
            assert len(idx) == 1, idx  # the visible pixels of exactly one object
            o = objs[idx.pop()]
            assert o["role"] == "target" and o["instance"] == k - 1
            assert o["family"] == ep.meta["concept"]["instances"][k - 1]["family"]
            area = int((lab == k).sum())
            assert 30 <= area <= 0.4 * lab.size
            # one object; thin occluders (clutter strokes) may cut it, so close small gaps first
            closed = cv2.morphologyEx((lab == k).astype(np.uint8), cv2.MORPH_CLOSE,
                                      np.ones((7, 7), np.uint8))
            _, comp = cv2.connectedComponents(closed, connectivity=8)
            share = np.bincount(comp[comp > 0]).max() / (comp > 0).sum()
            assert share > 0.5
            whole.append(share > 0.95)
    assert np.mean(whole) >= 0.9


@pytest.mark.parametrize("kind", ["semantic", "multiclass"])
def test_semantic_foreground_is_the_family(kind: str) -> None:
    for s in SEEDS:
        ep = generate_episode(s, kind)
        c = ep.meta["concept"]
        fams = c["families"] if kind == "multiclass" else [c["family"]]
        objs = {o["index"]: o for o in ep.meta["query_objects"]}
        objmap, lab = ep.meta["query_objmap"], ep.query[1]
        for k, fam in enumerate(fams, 1):
            idx = np.unique(objmap[lab == k])
            assert all(objs[i]["family"] == fam for i in idx.tolist())
        for o in objs.values():  # every visible object of a target family is labelled
            if o["family"] in fams and o["visible_px"] > 0:
                assert o["role"] == "target" and o["label"] == fams.index(o["family"]) + 1
        assert np.all(lab[objmap < 0] == 0)


@pytest.mark.parametrize("kind", ["semantic", "multiclass"])
def test_shared_look_leaves_only_the_shape(kind: str) -> None:
    shared = SyntheticConfig(shared_look_p=1.0)
    for s in SEEDS:
        ep = generate_episode(s, kind, cfg=shared)
        for objs in (ep.meta["prompt_objects"][0], ep.meta["query_objects"]):
            looks = {(o["texture"], tuple(o["color"])) for o in objs if o["role"] != "clutter"}
            assert len(looks) == 1, looks  # one look for every object: the family is the only cue
        mixed = generate_episode(s, kind)  # the default draws a look per object
        assert len({(o["texture"], tuple(o["color"])) for o in mixed.meta["query_objects"]
                    if o["role"] != "clutter"}) > 1
    with pytest.raises(ValueError, match=r"^shared_look_p must be in \[0, 1\], got 1.5$"):
        generate_episode(0, kind, cfg=SyntheticConfig(shared_look_p=1.5))


def test_color_and_texture_concepts() -> None:
    for s in SEEDS:
        ep = generate_episode(s, "color")
        for o in ep.meta["query_objects"]:
            if o["label"] == 1:
                assert o["color_name"] == ep.meta["concept"]["color"]
            elif o["role"] == "distractor":
                assert o["color_name"] != ep.meta["concept"]["color"]
        ep = generate_episode(s, "texture")
        tex = ep.meta["concept"]["texture"]
        for o in ep.meta["query_objects"]:
            if o["role"] != "clutter":
                assert (o["label"] == 1) == (o["texture"] == tex)


def test_prompt_and_query_differ() -> None:
    for kind in KINDS:
        ep = generate_episode(11, kind, num_shots=2)
        imgs = [p[0] for p in ep.prompts] + [ep.query[0]]
        assert not np.array_equal(imgs[0], imgs[1]) and not np.array_equal(imgs[0], imgs[2])


def test_clip_deterministic_and_consistent() -> None:
    f1, l1 = generate_clip(4, 10, num_objects=3)
    f2, l2 = generate_clip(4, 10, num_objects=3)
    assert len(f1) == len(l1) == 10
    for a, b in zip(f1 + l1, f2 + l2):
        assert np.array_equal(a, b)
    f3, _ = generate_clip(5, 10, num_objects=3)
    assert not np.array_equal(f1[0], f3[0])
    for f, lab in zip(f1, l1):
        assert f.shape == (224, 224, 3) and f.dtype == np.uint8
        assert lab.shape == (224, 224) and lab.dtype == np.int64
        assert set(np.unique(lab).tolist()) <= {0, 1, 2, 3}
    assert set(np.unique(l1[0]).tolist()) == {0, 1, 2, 3}
    # ids follow the objects: an id's centroid moves little between consecutive frames
    for k in (1, 2, 3):
        cs = [np.argwhere(lab == k).mean(0) for lab in l1 if (lab == k).sum() > 50]
        steps = [np.abs(a - b).max() for a, b in itertools.pairwise(cs)]
        assert max(steps) < 30
    assert not np.array_equal(l1[0], l1[-1])  # things move


@pytest.mark.parametrize("n", [4, 9, 24])
def test_clip_leave_and_return(n: int) -> None:
    for s in range(6):
        _, labels = generate_clip(s, n, size=(128, 160), num_objects=2, leave_and_return=True)
        present = [bool((lab == 1).any()) for lab in labels]
        assert present[0]
        gone = present.index(False)
        assert any(present[gone:]), present  # back again
    _, labels = generate_clip(1, 12, num_objects=3, leave_and_return=True, leave_id=2)
    present = [bool((lab == 2).any()) for lab in labels]
    assert present[0] and not all(present) and any(present[present.index(False):])
    with pytest.raises(ValueError):
        generate_clip(0, 3, leave_and_return=True)


def test_label_palette() -> None:
    assert label_palette is davis_palette  # one home: painter_seg.io.masks
    pal = label_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert tuple(pal[0]) == (0, 0, 0) and len({tuple(c) for c in pal[:32]}) == 32


def test_make_examples(tmp_path) -> None:
    written = make_examples(tmp_path, seed=0)
    files = written["few_shot"] + written["clip"]
    assert all(p.is_file() for p in files)
    assert sum(p.stat().st_size for p in files) < 1_000_000
    masks = [p for p in written["few_shot"] if p.suffix == ".png"]
    assert len(masks) >= 4 and len(masks) * 2 == len(written["few_shot"])
    for p in masks:
        im = Image.open(p)
        assert im.mode == "P" and im.size == (224, 224)
        assert np.asarray(im).max() >= 1
    frames = sorted((tmp_path / "clip" / "JPEGImages" / "synthetic").glob("*.jpg"))
    assert frames[0].name == "00000.jpg" and len(frames) >= 8
    first = tmp_path / "clip" / "Annotations" / "synthetic" / "00000.png"
    assert Image.open(first).mode == "P" and np.asarray(Image.open(first)).max() >= 1
