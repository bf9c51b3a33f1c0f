"""The web UI in a real browser (headless Chromium through selenium): paint a mask on the prompt canvas, add a
target, segment, see the overlay; video tab: first frame, paint, propagate, play.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``) and
``selenium``; skipped cleanly without them. ``PAINTER_SEG_SCREENSHOT=<file.png>`` saves a screenshot of the
images tab after segmenting.
"""
from __future__ import annotations

import itertools
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1400,1000")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tiny_model):
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from painter_seg.server import ServerSettings, create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(tiny_model, ServerSettings(port=port)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as e:  # noqa: BLE001 - a browser that cannot start here is a skip, not a failure
        pytest.skip(f"chromium does not start here: {str(e).splitlines()[0][:200]}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, cond, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)


def _stroke(driver, element, points) -> None:
    """Press at the first point (offsets from the element's centre), move through the others, release."""
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver).move_to_element_with_offset(element, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        chain = chain.move_by_offset(x1 - x0, y1 - y0)
    chain.release().perform()


def _scene(tmp_path, name: str, shift: int = 0) -> str:
    img = np.full((120, 160, 3), (40, 120, 60), np.uint8)
    img[30 + shift : 90 + shift, 40:100] = (220, 40, 160)
    path = tmp_path / name
    Image.fromarray(img).save(path)
    return str(path)


def test_paint_prompt_add_target_segment_shows_overlay(browser, server_url, tmp_path):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(server_url)
    _wait(d, lambda d: "seggpt_tiny" in d.find_element(By.ID, "info").text, 30)
    d.find_element(By.ID, "prompt-file").send_keys(_scene(tmp_path, "prompt.png"))
    _wait(d, lambda d: d.execute_script("return editor.labels !== null"), 10)
    canvas = d.find_element(By.ID, "mask-canvas")
    _stroke(d, canvas, [(-40, -30), (40, -30), (40, 30), (-40, 30), (-40, 0), (30, 0)])
    painted = d.execute_script("return editor.labels.reduce((a, v) => a + (v === 1), 0)")
    assert painted > 200  # the brush painted class 1 into the label map
    d.find_element(By.ID, "tool-eraser").click()
    _stroke(d, canvas, [(-40, -30), (-30, -30)])
    assert d.execute_script("return editor.labels.reduce((a, v) => a + (v === 1), 0)") < painted
    d.find_element(By.CSS_SELECTOR, "#classes .add-class").click()  # a second class, its own colour
    d.find_element(By.ID, "tool-brush").click()
    _stroke(d, canvas, [(60, 40), (70, 45)])
    assert d.execute_script("return editor.labels.some((v) => v === 2)")
    d.find_element(By.ID, "target-file").send_keys(_scene(tmp_path, "target.png", shift=10))
    assert len(d.find_elements(By.CSS_SELECTOR, "#targets .target")) == 1
    d.find_element(By.ID, "segment").click()
    overlay = _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#targets img.overlay"))[0]
    _wait(d, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay), 10)
    assert d.execute_script("return arguments[0].naturalWidth", overlay) == 160
    assert "segmented 1 target" in d.find_element(By.ID, "status").text
    link = d.find_element(By.CSS_SELECTOR, "#targets .info a")
    assert link.get_attribute("download") == "target_mask.png"
    assert "/export.zip?format=masks" in d.find_element(By.ID, "download-all").get_attribute("href")
    shot = os.environ.get("PAINTER_SEG_SCREENSHOT")
    if shot:
        d.save_screenshot(shot)


def test_video_tab_propagates_and_plays(browser, server_url, tmp_path):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(server_url)
    d.find_element(By.ID, "tab-video").click()
    frames = [_scene(tmp_path, f"f{i}.png", shift=2 * i) for i in range(3)]
    d.find_element(By.ID, "video-frames").send_keys("\n".join(frames))
    _wait(d, lambda d: d.execute_script("return videoEditor.labels !== null"), 30)
    canvas = d.find_elements(By.CSS_SELECTOR, "#video-editor canvas")[1]
    _stroke(d, canvas, [(-20, -10), (20, -10), (20, 10), (-20, 10)])
    d.find_element(By.ID, "propagate").click()
    _wait(d, lambda d: d.find_element(By.ID, "video-status").text.startswith("done 3/3"), 120)
    assert d.find_element(By.ID, "video-progress").get_attribute("value") == "1"
    assert "/masks.zip" in d.find_element(By.ID, "video-zip").get_attribute("href")
    d.find_element(By.ID, "play").click()
    frame = d.find_element(By.ID, "player-frame")
    _wait(d, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", frame), 10)
    assert d.execute_script("return arguments[0].naturalWidth", frame) == 160
