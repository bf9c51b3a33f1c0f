"""Screenshots of the web UI for docs/server/ (headless Chromium + selenium, the shipped model, the bundled
examples): the masks are painted with the brush along the examples' ground-truth masks, row by row.

    python docs/server/screenshots.py            # starts painter-seg serve on a free port
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "server"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1400,1000")


def paint_labels(driver, canvas, labels: np.ndarray, classes: list[int], step: int = 3) -> None:
    """Brush strokes along each row run of ``labels == k`` (every ``step`` rows), one class at a time."""
    h, w = labels.shape
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]",
                                 canvas)
    sx, sy = rect[0] / w, rect[1] / h
    for k in classes:
        if k > 1:
            driver.find_element(By.CSS_SELECTOR, ".page:not([hidden]) .classes .add-class").click()
        for y in range(step // 2, h, step):
            xs = np.flatnonzero(labels[y] == k)
            if not len(xs):
                continue
            runs = np.split(xs, np.flatnonzero(np.diff(xs) > 1) + 1)
            for run in runs:
                x0, x1 = run[0] + 1, run[-1] - 1
                if x1 <= x0:
                    continue
                ox, oy = (x0 + 0.5) * sx - rect[0] / 2, (y + 0.5) * sy - rect[1] / 2
                (ActionChains(driver).move_to_element_with_offset(canvas, int(ox), int(oy)).click_and_hold()
                 .move_by_offset(int((x1 - x0) * sx), 0).release().perform())


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "painter_seg", "serve", f"port={port}"], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for f in FLAGS:
        opts.add_argument(f)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        d.get(url)
        WebDriverWait(d, 30).until(lambda d: "on cpu" in d.find_element(By.ID, "info").text)
        ex = REPO / "examples" / "few_shot"
        d.find_element(By.ID, "prompt-file").send_keys(str(ex / "prompt_0.jpg"))
        WebDriverWait(d, 10).until(lambda d: d.execute_script("return editor.labels !== null"))
        d.execute_script("document.getElementById('brush-size').value = 14")
        paint_labels(d, d.find_element(By.ID, "mask-canvas"), np.asarray(Image.open(ex / "prompt_0_mask.png")), [1])
        d.find_element(By.CSS_SELECTOR, "#classes input").clear()
        d.find_element(By.CSS_SELECTOR, "#classes input").send_keys("duck")
        d.find_element(By.ID, "target-file").send_keys("\n".join(str(p) for p in sorted((ex / "targets").glob("*.jpg"))))
        d.find_element(By.ID, "segment").click()
        WebDriverWait(d, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "img.overlay")) == 2)
        time.sleep(0.5)
        d.save_screenshot(str(OUT / "ui_images.png"))

        d.find_element(By.ID, "tab-video").click()
        frames = sorted((REPO / "examples" / "video" / "frames").glob("*.jpg"))
        d.find_element(By.ID, "video-frames").send_keys("\n".join(str(p) for p in frames))
        WebDriverWait(d, 30).until(lambda d: d.execute_script("return videoEditor.labels !== null"))
        canvas = d.find_elements(By.CSS_SELECTOR, "#video-editor canvas")[1]
        first = np.asarray(Image.open(REPO / "examples" / "video" / "first_mask.png"))
        paint_labels(d, canvas, first, [int(i) for i in np.unique(first) if i])
        d.find_element(By.ID, "propagate").click()
        WebDriverWait(d, 300).until(lambda d: d.find_element(By.ID, "video-status").text.startswith("done"))
        d.execute_script("showFrame(video.job.total - 1, video.job.done); window.scrollTo(0, 0)")
        time.sleep(0.8)
        d.save_screenshot(str(OUT / "ui_video.png"))
    finally:
        d.quit()
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
