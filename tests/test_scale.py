"""Data-set scale few-shot inference: tools/segment.py sharded over 2 torchrun processes (CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from painter_seg.data.synthetic import generate_episode
from painter_seg.utils.dist import DistInfo
from tests.conftest import REPO

NUM_TARGETS = 6


def _targets(tmp_path, n=NUM_TARGETS):
    """A prompt pair and ``n`` small generated targets (mixed .png/.jpg) in ``tmp_path/targets``."""
    ep = generate_episode(0, kind="multiclass", size=(64, 96))
    img, lab = ep.prompts[0]
    Image.fromarray(img).save(tmp_path / "p.png")
    Image.fromarray(lab.astype(np.uint8)).save(tmp_path / "p_mask.png")
    tdir = tmp_path / "targets"
    tdir.mkdir()
    stems = []
    for i in range(n):
        q = generate_episode(100 + i, kind="multiclass", size=(64, 96)).query[0]
        stem = f"t{i}"
        Image.fromarray(q).save(tdir / f"{stem}{'.png' if i % 2 else '.jpg'}")
        stems.append(stem)
    return stems


@pytest.mark.timeout(120)
def test_torchrun_two_ranks_write_every_target_once(tmp_path):
    stems = _targets(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    # a stale part from an earlier, crashed run must not be merged into this run's summary
    (out / "summary.rank1.json").write_text(json.dumps(
        {"run_id": "old", "targets": {"ghost": {}}, "failed": [], "seconds": 0.0}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(REPO / "tools/segment.py"), "model=seggpt_tiny", "device=cpu",
           f"prompt.images=[{tmp_path}/p.png]", f"prompt.masks=[{tmp_path}/p_mask.png]",
           f"targets=[{tmp_path}/targets]", f"output_dir={out}"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=110, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]

    expected = sorted(f"{s}_{k}.png" for s in stems for k in ("mask", "overlay", "paint"))
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected, "summary.json"])  # no parts, no tmp
    s = json.loads((out / "summary.json").read_text())
    assert list(s["targets"]) == stems  # each target once, in input order, nothing from the stale part
    assert [t["file"] for t in s["targets"].values()].count(str(tmp_path / "targets" / "t0.jpg")) == 1
    assert s["num_ok"] == NUM_TARGETS and s["num_failed"] == 0 and s["failed"] == []
    assert s["world_size"] == 2
    # one "segmented ..." line, from rank 0 only
    assert r.stdout.count("segmented 6 target(s), 0 failed") == 1


def test_merge_summaries_ignores_parts_of_other_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run-b")
    # rank 1 of this run reports; an old part of another run with another target lies next to it
    DistInfo(1, 3).merge_summaries(tmp_path, {"targets": {"b": {}}, "failed": [], "seconds": 2.0})
    (tmp_path / "summary.rank2.json").write_text(json.dumps(
        {"run_id": "run-a", "targets": {"stale": {}}, "failed": [], "seconds": 9.0}))
    with pytest.raises(TimeoutError, match="summary.rank2.json"):
        DistInfo(0, 3).merge_summaries(tmp_path, {"targets": {"a": {}}, "failed": [], "seconds": 1.0},
                                       timeout_s=0.5)
    DistInfo(2, 3).merge_summaries(tmp_path, {"targets": {"c": {}}, "failed": [{"file": "x"}],
                                              "seconds": 3.0})
    merged = DistInfo(0, 3).merge_summaries(tmp_path, {"targets": {"a": {}}, "failed": [], "seconds": 1.0},
                                            timeout_s=5)
    assert sorted(merged["targets"]) == ["a", "b", "c"]
    assert merged["num_ok"] == 3 and merged["num_failed"] == 1 and merged["seconds"] == 3.0
    assert "run_id" not in merged
    assert not list(tmp_path.glob("summary.rank*"))
