"""The HTTP API of ``painter-seg serve`` (FastAPI test client over the tiny model): every endpoint, bad uploads
as 4xx JSON with the server still up, concurrent requests batched on one worker, video jobs, exports, token;
and the CLI contract (``python -m painter_seg serve port=P`` with the default model)."""
from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient

from painter_seg.checkpoint import weights_fingerprint
from painter_seg.codec.palette import build_palette
from painter_seg.server import ServerSettings, create_app
from painter_seg.tuning import TunedPrompt
from tests.conftest import REPO

RNG = np.random.default_rng(0)


def png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def image(h: int = 48, w: int = 64) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def mask(h: int = 48, w: int = 64, ids: tuple[int, ...] = (1,)) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    for k, i in enumerate(ids):
        m[4 + 12 * k : 14 + 12 * k, 8:40] = i
    return m


def labels_of(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


PROMPT_IMG, PROMPT_MASK = image(), mask(ids=(1, 2))


def pair_files(n: int = 1) -> list:
    files = []
    for k in range(n):
        files += [("prompt_image", (f"p{k}.png", png(PROMPT_IMG))), ("prompt_mask", (f"m{k}.png", png(PROMPT_MASK)))]
    return files


@pytest.fixture(scope="module")
def app(tiny_model, tmp_path_factory):
    settings = ServerSettings(max_pixels=400 * 400, max_upload_mb=2, max_video_mb=4, max_targets=6,
                              max_video_frames=12, work_dir=str(tmp_path_factory.mktemp("serve")))
    return create_app(tiny_model, settings)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def assert_error(r, status: int, text: str = "") -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and text in body["error"], body


# ------------------------------------------------------------------------------------------------ basics


def test_health_info_docs_and_ui(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/api/info").json()
    assert info["model"] == "seggpt_tiny" and info["device"] == "cpu" and info["precision"] in ("fp32", "bf16")
    assert set(info["strategies"]) == {"plain", "spatial_ensemble", "feature_ensemble", "tuned"}
    assert info["limits"]["max_targets"] == 6
    assert client.get("/docs").status_code == 200
    assert "/api/segment" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_segment_returns_label_maps_at_target_size_in_order(client):
    targets = [("target", ("b.jpg", png(image(40, 30), "JPEG"))), ("target", ("a.png", png(image(64, 80))))]
    r = client.post("/api/segment", files=pair_files() + targets,
                    data={"overlay": "true", "class_names": "cat,dog"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["strategy"] == "plain" and body["seg_type"] == "semantic"
    assert body["class_names"] == {"1": "cat", "2": "dog"} and set(body["colors"]) == {"1", "2"}
    assert [x["name"] for x in body["results"]] == ["b.jpg", "a.png"]
    for res, (h, w) in zip(body["results"], [(40, 30), (64, 80)]):
        lab = labels_of(res["mask_png"])
        assert lab.shape == (h, w) and (res["height"], res["width"]) == (h, w)
        assert set(np.unique(lab)) - {0} == set(res["ids"]) <= {1, 2}
        assert {int(k) for k in res["classes"]} == set(res["ids"])
        assert np.asarray(Image.open(io.BytesIO(base64.b64decode(res["overlay_jpg"])))).shape == (h, w, 3)


@pytest.mark.parametrize("strategy", ["spatial_ensemble", "feature_ensemble"])
def test_several_pairs_and_seg_type(client, strategy):
    r = client.post("/api/segment", files=pair_files(2) + [("target", ("t.png", png(image())))],
                    data={"strategy": strategy, "seg_type": "instance"})
    assert r.status_code == 200, r.text
    assert r.json()["strategy"] == strategy and r.json()["seg_type"] == "instance"


def test_export_zip_of_a_result(client):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    r = client.post("/api/segment", files=pair_files() + [("target", ("t.png", png(image())))],
                    data={"class_names": '{"1": "cat", "2": "dog"}'})
    rid, res = r.json()["id"], r.json()["results"][0]
    z = client.get(f"/api/results/{rid}/export.zip", params={"format": "masks"})
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        assert np.array_equal(np.asarray(Image.open(zf.open("masks/t.png"))), labels_of(res["mask_png"]))
    z = client.get(f"/api/results/{rid}/export.zip", params={"format": "coco"})
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        data = json.loads(zf.read("coco/coco.json"))
    assert {c["name"] for c in data["categories"]} == {"cat", "dog"}
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    lab = labels_of(res["mask_png"])
    for ann in data["annotations"]:
        assert np.array_equal(coco.annToMask(ann), lab == ann["category_id"])
    for fmt in ("yolo", "png"):
        assert client.get(f"/api/results/{rid}/export.zip", params={"format": fmt}).status_code == 200
    assert_error(client.get(f"/api/results/{rid}/export.zip", params={"format": "tiff"}), 400, "format")
    assert_error(client.get("/api/results/nope/export.zip"), 404, "no result")


def test_box_tool_endpoint(client):
    img = np.full((60, 60, 3), 40, np.uint8)
    img[20:40, 15:45] = (220, 200, 30)
    r = client.post("/api/prompt/box", files={"image": ("i.png", png(img))}, data={"box": "10,15,50,45"})
    assert r.status_code == 200, r.text
    m = labels_of(r.json()["mask_png"])
    assert m.shape == (60, 60) and m[30, 30] == 1 and m[0, 0] == 0
    assert_error(client.post("/api/prompt/box", files={"image": ("i.png", png(img))}, data={"box": "1,2"}), 400)
    assert_error(client.post("/api/prompt/box", files={"image": ("i.png", png(img))}, data={"box": "0,0,99,9"}),
                 400, "box=")


# ------------------------------------------------------------------------------------------------ bad input


BAD = {
    "not an image": (lambda: pair_files() + [("target", ("t.png", b"hello, world"))], {}, 400, "t.png: not a readable"),
    "empty upload": (lambda: pair_files() + [("target", ("t.png", b""))], {}, 400, "empty file"),
    "huge image": (lambda: pair_files() + [("target", ("big.png", png(np.zeros((500, 500, 3), np.uint8))))],
                   {}, 413, "big.png: image is 500x500"),
    "no target": (lambda: pair_files(), {}, 400, "target"),
    "no prompt": (lambda: [("target", ("t.png", png(image())))], {}, 400, "example pair"),
    "unpaired mask": (lambda: pair_files() + [("prompt_image", ("x.png", png(image()))),
                                              ("target", ("t.png", png(image())))], {}, 400, "paired"),
    "size mismatch": (lambda: [("prompt_image", ("p.png", png(image(48, 64)))),
                               ("prompt_mask", ("m.png", png(mask(30, 64)))), ("target", ("t.png", png(image())))],
                      {}, 400, "m.png: mask is 64x30 but its image is 64x48"),
    "empty mask": (lambda: [("prompt_image", ("p.png", png(image()))),
                            ("prompt_mask", ("m.png", png(np.zeros((48, 64), np.uint8)))),
                            ("target", ("t.png", png(image())))], {}, 400, "empty"),
    "unknown strategy": (lambda: pair_files() + [("target", ("t.png", png(image())))], {"strategy": "magic"},
                         400, "strategy=magic"),
    "plain with two pairs": (lambda: pair_files(2) + [("target", ("t.png", png(image())))],
                             {"strategy": "plain"}, 400, "exactly one prompt"),
    "bad seg_type": (lambda: pair_files() + [("target", ("t.png", png(image())))], {"seg_type": "panoptic"},
                     400, "seg_type"),
    "unknown tuned": (lambda: [("target", ("t.png", png(image())))], {"tuned": "abc"}, 404, "tuned=abc"),
    "bad class_names": (lambda: pair_files() + [("target", ("t.png", png(image())))], {"class_names": "[1"},
                        200, ""),  # a plain string: one name
    "bad colors": (lambda: pair_files() + [("target", ("t.png", png(image())))], {"colors": '{"1": [1, 2]}'},
                   400, "colors"),
    "bad mask_mode": (lambda: pair_files() + [("target", ("t.png", png(image())))], {"mask_mode": "soft"},
                      400, "mask_mode"),
    "too many targets": (lambda: pair_files() + [("target", (f"{i}.png", png(image(8, 8)))) for i in range(7)],
                         {}, 413, "at most 6"),
    "text instead of file": (lambda: pair_files() + [("target", (None, "just text"))], {}, 422, "target"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_are_json_errors_and_server_stays_up(client, case):
    files, data, status, text = BAD[case]
    r = client.post("/api/segment", files=files(), data=data)
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        assert_error(r, status, text)
    assert client.get("/health").status_code == 200


def test_body_limit_unknown_route_and_method(client):
    big = b"\0" * (3 * 1024 * 1024)
    assert_error(client.post("/api/segment", files={"target": ("t.png", big)}), 413, "limit")
    assert_error(client.get("/api/nothing"), 404)
    assert_error(client.delete("/api/segment"), 405)
    assert client.get("/health").status_code == 200


def test_server_never_reads_a_path_the_client_names(client, tmp_path):
    secret = tmp_path / "secret.png"
    Image.fromarray(image()).save(secret)
    files = pair_files() + [("target", (str(secret), png(image())))]
    r = client.post("/api/segment", files=files)
    assert r.status_code == 200 and r.json()["results"][0]["name"] == "secret.png"  # a label, not a path
    r = client.post("/api/segment", files=pair_files(), data={"target": str(secret)})
    assert r.status_code == 422  # a text field where a file is expected


# ------------------------------------------------------------------------------------------------ concurrency


def test_concurrent_requests_share_one_worker_and_batch(app, client):
    service = app.state.server.service
    before = dict(service.stats)
    files = pair_files() + [("target", ("t.png", png(image())))]
    gate = threading.Event()
    blocker = threading.Thread(target=lambda: service.call(lambda m: gate.wait(10)))
    blocker.start()  # the worker is busy, so the requests below queue up and are taken together
    out: list = [None] * 4

    def post(i: int) -> None:
        out[i] = client.post("/api/segment", files=files)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.time() + 20
    while service.queued < 4 and time.time() < deadline:  # the blocker's call is running, not queued
        time.sleep(0.05)
    gate.set()
    for t in threads + [blocker]:
        t.join(60)
    assert all(r is not None and r.status_code == 200 for r in out), [r and r.text for r in out]
    masks = [r.json()["results"][0]["mask_png"] for r in out]
    ref = labels_of(masks[0])
    assert all((labels_of(m) == ref).mean() > 0.99 for m in masks)
    groups = service.stats["groups"] - before["groups"]
    assert service.stats["requests"] - before["requests"] == 4 and groups == 1  # one forward for all four


def test_full_queue_is_503_with_retry_after(tiny_model):
    with TestClient(create_app(tiny_model, ServerSettings(queue_size=1))) as c:
        service = c.app.state.server.service
        gate = threading.Event()
        threading.Thread(target=lambda: service.call(lambda m: gate.wait(10))).start()
        time.sleep(0.2)  # the worker holds the blocker
        threading.Thread(target=lambda: service.call(lambda m: None)).start()  # fills the one slot
        time.sleep(0.2)
        r = c.post("/api/segment", files=pair_files() + [("target", ("t.png", png(image())))])
        gate.set()
        assert_error(r, 503, "busy")
        assert r.headers["retry-after"] == "2"


def test_token(tiny_model):
    with TestClient(create_app(tiny_model, ServerSettings(token="s3cret"))) as c:
        assert c.get("/health").status_code == 200
        assert_error(c.get("/api/info"), 401, "token")
        assert_error(c.get("/api/info", headers={"Authorization": "Bearer wrong"}), 401)
        assert c.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/info", params={"token": "s3cret"}).status_code == 200


# ------------------------------------------------------------------------------------------------ tuned prompts


def _tuned(model, path: Path, fingerprint: str | None = None) -> Path:
    h, w = model.half_size
    pal = build_palette(1)
    m = torch.zeros(3, h, w)
    m[:, : h // 2] = 1.0
    TunedPrompt(torch.randn(3, h, w) * 0.1, m, pal, [3], ["thing"], "semantic", model.config_name,
                fingerprint or weights_fingerprint(model)).save(path)
    return path


def test_tuned_prompt_upload_and_use(client, tiny_model, tmp_path):
    path = _tuned(tiny_model, tmp_path / "scene.safetensors")
    r = client.post("/api/tuned", files={"artifact": ("scene.safetensors", path.read_bytes())})
    assert r.status_code == 200, r.text
    tid = r.json()["id"]
    assert r.json()["class_names"] == ["thing"] and any(t["id"] == tid for t in client.get("/api/tuned").json()["tuned"])
    r = client.post("/api/segment", files=[("target", ("t.png", png(image())))], data={"tuned": tid})
    assert r.status_code == 200, r.text
    assert r.json()["strategy"] == "tuned" and r.json()["class_names"] == {"3": "thing"}
    assert set(r.json()["results"][0]["ids"]) <= {3}
    other = _tuned(tiny_model, tmp_path / "other.safetensors", fingerprint="0" * 16)
    assert_error(client.post("/api/tuned", files={"artifact": ("other.safetensors", other.read_bytes())}),
                 400, "other.safetensors: tuned for model")
    assert_error(client.post("/api/tuned", files={"artifact": ("x.safetensors", b"junk")}), 400, "x.safetensors")
    assert_error(client.post("/api/segment", files=[("target", ("t.png", png(image())))],
                             data={"strategy": "tuned"}), 400, "tuned=<id>")


# ------------------------------------------------------------------------------------------------ video


def _frames(n: int = 4, h: int = 40, w: int = 48) -> list[np.ndarray]:
    out = []
    for i in range(n):
        f = np.full((h, w, 3), 30, np.uint8)
        f[10:26, 6 + 2 * i : 22 + 2 * i] = (240, 80, 40)
        out.append(f)
    return out


def _wait_done(client, vid: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = client.get(f"/api/video/{vid}").json()
        if info["status"] in ("done", "failed", "cancelled"):
            return info
        time.sleep(0.1)
    raise AssertionError(f"video job {vid} did not finish: {info}")


def test_video_job_from_frames_with_progress_overlays_and_zip(client):
    frames = _frames()
    first = np.zeros((40, 48), np.uint8)
    first[10:26, 6:22] = 2
    files = [("frame", (f"f{i:02d}.jpg", png(f, "JPEG"))) for i, f in enumerate(frames)]
    r = client.post("/api/video", files=files + [("first_mask", ("m.png", png(first)))],
                    data={"mask_mode": "ids"})  # grey {0, 2}: auto would read it as a binary mask
    assert r.status_code == 200, r.text
    vid = r.json()["id"]
    assert r.json()["total"] == 4 and r.json()["status"] in ("queued", "running", "done")
    info = _wait_done(client, vid)
    assert info["status"] == "done" and info["done"] == 4 and info["progress"] == 1.0 and info["objects"] == [2]
    assert client.get(f"/api/video/{vid}/first.jpg").headers["content-type"] == "image/jpeg"
    ov = client.get(f"/api/video/{vid}/overlay/3.jpg")
    assert ov.status_code == 200 and np.asarray(Image.open(io.BytesIO(ov.content))).shape == (40, 48, 3)
    assert_error(client.get(f"/api/video/{vid}/overlay/9.jpg"), 404, "frame 9")
    with zipfile.ZipFile(io.BytesIO(client.get(f"/api/video/{vid}/masks.zip").content)) as zf:
        names = sorted(zf.namelist())
        assert names == [f"masks/f{i:02d}.png" for i in range(4)]
        assert np.array_equal(np.asarray(Image.open(zf.open(names[0]))), first)
    assert client.delete(f"/api/video/{vid}").json()["status"] == "removed"
    assert_error(client.get(f"/api/video/{vid}"), 404)


def test_video_two_step_from_mp4_and_bad_inputs(client, tmp_path):
    import cv2

    path = tmp_path / "clip.mp4"
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (48, 40))
    for f in _frames(3):
        wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    wr.release()
    r = client.post("/api/video", files={"video": ("clip.mp4", path.read_bytes())})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "waiting_mask" and (job["width"], job["height"]) == (48, 40)
    assert_error(client.get(f"/api/video/{job['id']}/masks.zip"), 409, "waiting_mask")
    assert_error(client.post(f"/api/video/{job['id']}/mask", files={"first_mask": ("m.png", png(mask(20, 20)))}),
                 400, "first_mask is 20x20")
    first = np.zeros((40, 48), np.uint8)
    first[10:26, 6:22] = 1
    assert_error(client.post(f"/api/video/{job['id']}/mask", files={"first_mask": ("m.png", png(first))},
                             data={"colors": "red"}), 400, "colors")
    r = client.post(f"/api/video/{job['id']}/mask", files={"first_mask": ("m.png", png(first * 255))},
                    data={"context_frames": "2", "colors": '{"1": [10, 200, 30]}'})
    assert r.status_code == 200, r.text
    assert _wait_done(client, job["id"])["status"] == "done"
    with zipfile.ZipFile(io.BytesIO(client.get(f"/api/video/{job['id']}/masks.zip").content)) as zf:
        im = Image.open(zf.open("masks/00000.png"))
        assert im.mode == "P" and im.getpalette()[3:6] == [10, 200, 30]  # the colour asked for id 1
    assert_error(client.post(f"/api/video/{job['id']}/mask", files={"first_mask": ("m.png", png(first))}), 409)
    assert_error(client.post("/api/video", files={"video": ("clip.mp4", b"not a video")}), 400, "cannot decode")
    assert_error(client.post("/api/video", files={"video": ("clip.exe", b"x")}), 400, "expected a video")
    assert_error(client.post("/api/video", data={"seg_type": "instance"}), 400, "either frames")
    many = [("frame", (f"{i}.png", png(np.zeros((4, 4, 3), np.uint8)))) for i in range(13)]
    assert_error(client.post("/api/video", files=many), 413, "at most 12")
    assert_error(client.get("/api/video/unknown"), 404)
    assert client.get("/health").status_code == 200


# ------------------------------------------------------------------------------------------------ the CLI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_the_default_model_on_localhost():
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "painter_seg", "serve", f"port={port}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
            assert proc.poll() is None, proc.stdout.read()
        assert httpx.get(f"{url}/api/info").json()["model"] == "default"
        ex = REPO / "examples" / "few_shot"
        files = [("prompt_image", ("prompt_0.jpg", (ex / "prompt_0.jpg").read_bytes())),
                 ("prompt_mask", ("prompt_0_mask.png", (ex / "prompt_0_mask.png").read_bytes())),
                 ("target", ("duck_toy_00.jpg", (ex / "targets" / "duck_toy_00.jpg").read_bytes()))]
        r = httpx.post(f"{url}/api/segment", files=files, timeout=60)
        assert r.status_code == 200, r.text
        res = r.json()["results"][0]
        assert res["name"] == "duck_toy_00.jpg" and res["ids"] == [1]
        with Image.open(ex / "targets" / "duck_toy_00.jpg") as im:
            assert labels_of(res["mask_png"]).shape == im.size[::-1]
    finally:
        proc.terminate()
        proc.wait(20)


def test_serve_job_refuses_bad_options_before_loading_the_model():
    from hydra import compose, initialize_config_dir

    from painter_seg.config import conf_dir
    from painter_seg.errors import InputError
    from painter_seg.jobs.serve import run

    for override, text in (("default_strategy=tuned", "default_strategy=tuned"), ("port=0", "port=0")):
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose("serve", [override])
        with pytest.raises(InputError, match=text):
            run(cfg)
