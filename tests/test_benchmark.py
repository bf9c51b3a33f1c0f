"""tools/benchmark.py on the tiny model: ours vs transformers on the same random weights, JSON report."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("transformers")

ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}


def _bench(*args, timeout=240):
    return subprocess.run([sys.executable, str(REPO / "tools/benchmark.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=ENV, timeout=timeout, check=False)


@pytest.mark.timeout(300)
def test_speed_report_has_every_configuration_and_fp32_matches_transformers(tmp_path):
    out = tmp_path / "bench.json"
    r = _bench("--model", "seggpt_tiny", "--configs", "1prompt,fe4,se4", "--precisions", "fp32,bf16",
               "--repeats", "1", "--warmup", "0", "--device", "cpu", "--json", out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "speed" and doc["meta"]["model"] == "seggpt_tiny"
    assert doc["meta"]["params"] == 15_524_035 and "memory_method" in doc["meta"]
    res = doc["results"]
    assert set(res) == {f"{w}/{p}" for w in ("1prompt", "fe4", "se4") for p in ("fp32", "bf16")}
    for key, row in res.items():
        for f in ("workload", "precision", "compile", "prompts", "targets", "ours_ms", "theirs_ms", "ratio",
                  "ours_peak_mib", "theirs_peak_mib", "max_abs_diff"):
            assert f in row, (key, f)
        assert row["ours_ms"] > 0 and len(row["ours_times_ms"]) == 1
        assert row["ours_peak_mib"] is not None and row["ours_peak_mib"] >= 0
    for key in ("1prompt/fp32", "fe4/fp32"):
        row = res[key]
        assert row["theirs_ms"] > 0 and row["ratio"] == pytest.approx(row["ours_ms"] / row["theirs_ms"], rel=1e-2)
        assert row["theirs_peak_mib"] is not None
        assert row["max_abs_diff"] <= 1e-4, (key, row["max_abs_diff"])
    assert res["fe4/fp32"]["prompts"] == 4
    # stock transformers averages the merge block across streams (seggpt_facts.md 3.3): reported, not hidden
    assert res["fe4/fp32"]["max_abs_diff_vs_stock_hf"] > 1e-4
    se = res["se4/fp32"]  # transformers has no spatial ensemble
    assert se["theirs_ms"] is None and se["ratio"] is None and se["max_abs_diff"] is None
    assert "1prompt/fp32" in r.stdout and "n/a" in r.stdout
    # bf16 rows are also set against the reference's fp32 time of the same workload
    bf = res["1prompt/bf16"]
    assert bf["ratio_vs_theirs_fp32"] == pytest.approx(bf["ours_ms"] / res["1prompt/fp32"]["theirs_ms"], rel=1e-2)
    assert "ratio_vs_theirs_fp32" not in res["1prompt/fp32"] and "ratio_vs_theirs_fp32" not in res["se4/bf16"]
    # work rate: one count per workload (the same in every precision), set against the measured matrix rate
    rates = doc["meta"]["mm_rate"]
    assert set(rates) == {"fp32", "bf16"} and rates["fp32"]["shape"] == [784, 192, 768]
    assert all(r["gflops"] > 0 for r in rates.values())
    for w in ("1prompt", "fe4", "se4"):
        assert res[f"{w}/fp32"]["gflop"] == res[f"{w}/bf16"]["gflop"] == doc["meta"]["gflop_per_call"][w] > 0
    assert res["fe4/fp32"]["gflop"] > 3 * res["1prompt/fp32"]["gflop"]
    for key, row in res.items():  # tolerances: the report's rounding (0.1 GFLOP/s, 4 decimals)
        gflops = row["gflop"] / row["ours_ms"] * 1e3
        assert row["ours_gflops"] == pytest.approx(gflops, abs=0.051), key
        assert row["ours_mm_fraction"] == pytest.approx(gflops / rates[row["precision"]]["gflops"], abs=1e-4), key


@pytest.mark.timeout(200)
def test_quality_mode_compares_bf16_with_fp32(tmp_path):
    out = tmp_path / "q.json"
    r = _bench("--quality", "--quality-model", "seggpt_tiny", "--episodes", "2", "--device", "cpu",
               "--json", out, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    q = json.loads(out.read_text())["quality"]
    assert set(q["precisions"]) == {"fp32", "bf16"}
    assert q["precisions"]["fp32"]["iou_vs_fp32_mean"] == 1.0
    assert 0.0 <= q["precisions"]["bf16"]["iou_vs_fp32_min"] <= q["precisions"]["bf16"]["iou_vs_fp32_mean"] <= 1.0


def _tool():
    spec = importlib.util.spec_from_file_location("benchmark_tool", REPO / "tools/benchmark.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool  # its dataclasses look their module up there
    spec.loader.exec_module(tool)
    return tool


def test_flop_count_includes_attention_with_a_bias():
    import torch
    import torch.nn.functional as F

    q, bias = torch.randn(2, 3, 40, 16), torch.randn(2, 3, 40, 40)
    x, w = torch.randn(40, 16), torch.randn(24, 16)

    def call():
        return F.scaled_dot_product_attention(q, q, q, attn_mask=bias).sum() + F.linear(x, w).sum()

    # q k^T and attn v: 2 x (2 flop x B H L L D); the linear: 2 x M K N
    assert _tool().count_gflop(call) * 1e9 == pytest.approx(2 * 2 * 2 * 3 * 40 * 40 * 16 + 2 * 40 * 16 * 24)


def test_bad_configuration_is_a_one_line_error(capsys):
    tool = _tool()
    assert tool.main(["--model", "seggpt_tiny", "--configs", "nope", "--device", "cpu"]) == 2
    assert "--configs: unknown ['nope']" in capsys.readouterr().err


@pytest.mark.timeout(200)
def test_process_rss_mode_reports_one_fresh_process(tmp_path):
    out = tmp_path / "rss.json"
    r = _bench("--process-rss", "--model", "seggpt_tiny", "--threads", "1", "--json", out, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    q = json.loads(out.read_text())
    assert q["mode"] == "process_rss"
    p = q["process_rss"]
    assert p["model"] == "seggpt_tiny" and p["params"] == 15_524_035
    assert 0 < p["rss_start_mib"] <= p["rss_loaded_mib"] <= p["peak_mib"] and p["rss_start_mib"] < p["peak_mib"]
    assert p["rss_after_call_mib"] <= p["peak_mib"]
    assert abs(p["weights_mib"] - 15_524_035 * 4 / 2**20) < 0.1  # fp32 weights
    assert 0 < p["rss_file_mib"] and 0 < p["rss_anon_mib"]
    assert p["rss_file_mib"] + p["rss_anon_mib"] <= p["peak_mib"] + 1
    assert "process RSS, seggpt_tiny" in r.stdout
