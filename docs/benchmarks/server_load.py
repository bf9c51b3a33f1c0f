"""Bounded load test of ``painter-seg serve`` on localhost with the shipped model.

Starts ``python -m painter_seg serve`` on a free port, then 8 client threads x 20 requests each
(``POST /api/segment``: one example pair, one target, from examples/few_shot), in two scenarios:

- ``same_prompt``: every client sends the same example pair (a labelling job): the worker paints queued
  requests with equal prompts together (batched forwards);
- ``distinct_prompts``: each client its own pair (the example flipped / rotated): no two requests share a
  forward.

Records per scenario: errors, throughput (requests/s), latency p50/p95/max, worker groups (forwards taken
for the requests), and the server's RSS (``/proc/<pid>/status`` VmRSS) after start-up and after each
scenario. Writes docs/benchmarks/server_load.json and prints a table.

    python docs/benchmarks/server_load.py [--clients 8] [--requests 20]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
EX = REPO / "examples" / "few_shot"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def variants() -> list[tuple[bytes, bytes]]:
    """8 example pairs: the bundled one under the 8 flips / rotations of the square."""
    img = np.asarray(Image.open(EX / "prompt_0.jpg").convert("RGB"))
    msk = np.asarray(Image.open(EX / "prompt_0_mask.png"))
    out = []
    for k in range(8):
        a, m = np.rot90(img, k % 4), np.rot90(msk, k % 4)
        if k >= 4:
            a, m = a[:, ::-1], m[:, ::-1]
        out.append((png(np.ascontiguousarray(a)), png(np.ascontiguousarray(m.astype(np.uint8)))))
    return out


def run_scenario(url: str, pid: int, clients: int, requests: int, distinct: bool) -> dict:
    pairs = variants()
    targets = [(p.name, p.read_bytes()) for p in sorted((EX / "targets").glob("*.jpg"))]
    before = httpx.get(f"{url}/api/info").json()["stats"]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(timeout=120) as http:
            for i in range(requests):
                img, msk = pairs[c % len(pairs)] if distinct else pairs[0]
                name, data = targets[(c + i) % len(targets)]
                files = [("prompt_image", ("p.png", img)), ("prompt_mask", ("m.png", msk)), ("target", (name, data))]
                t0 = time.perf_counter()
                try:
                    r = http.post(f"{url}/api/segment", files=files)
                    ok = r.status_code == 200 and len(r.json()["results"]) == 1
                    err = None if ok else f"{r.status_code} {r.text[:100]}"
                except httpx.HTTPError as e:
                    err = f"{type(e).__name__}: {e}"
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if err:
                        errors.append(err)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = httpx.get(f"{url}/api/info").json()["stats"]
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies), "errors": len(errors), "error_samples": errors[:3],
        "wall_s": round(wall, 2), "throughput_rps": round(len(latencies) / wall, 2),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1),
                       "p95": round(float(np.percentile(lat, 95)), 1), "max": round(float(lat.max()), 1)},
        "worker_groups": after["groups"] - before["groups"],
        "rss_after_mib": rss_mib(pid),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--json", default=str(REPO / "docs" / "benchmarks" / "server_load.json"))
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "painter_seg", "serve", f"port={port}", "log_level=warning"],
                              cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        info = httpx.get(f"{url}/api/info").json()
        report = {"model": info["model"], "device": info["device"], "precision": info["precision"],
                  "batch_size": info["limits"]["batch_size"], "clients": args.clients,
                  "requests_per_client": args.requests, "cpus": os.cpu_count(), "machine": platform.machine(),
                  "rss_start_mib": rss_mib(server.pid), "load_average_before": os.getloadavg(),
                  "scenarios": {}}
        for name, distinct in (("same_prompt", False), ("distinct_prompts", True)):
            report["scenarios"][name] = run_scenario(url, server.pid, args.clients, args.requests, distinct)
        report["health_after"] = httpx.get(f"{url}/health").status_code
        report["load_average_after"] = os.getloadavg()
    finally:
        server.terminate()
        server.wait(30)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"model {report['model']} on {report['device']} ({report['precision']}), {args.clients} clients x "
          f"{args.requests} requests, RSS at start {report['rss_start_mib']} MiB")
    for name, s in report["scenarios"].items():
        print(f"{name:17s} errors {s['errors']}  {s['throughput_rps']} req/s  p50 {s['latency_ms']['p50']} ms  "
              f"p95 {s['latency_ms']['p95']} ms  max {s['latency_ms']['max']} ms  forwards/groups "
              f"{s['worker_groups']}  RSS after {s['rss_after_mib']} MiB")


if __name__ == "__main__":
    main()
