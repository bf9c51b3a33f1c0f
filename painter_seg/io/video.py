"""Lazy video frame sources (a folder of frames or an mp4) and an mp4 writer."""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from .images import load_image

FRAME_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def _quiet_ffmpeg() -> None:
    """Silence FFmpeg's own stderr lines ("moov atom not found"...): a file it cannot decode is reported
    once, by us, as one line. OpenCV reads the level when it first opens a video, so call this before any
    ``cv2.VideoCapture`` / ``cv2.VideoWriter``; a level the user set is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def missing_numbers(names: list[str]) -> list[str]:
    """Names absent from a numbered sequence: ``["00000", "00001", "00003"]`` -> ``["00002"]``.

    Only for names that are all ``<prefix><digits>`` with one prefix and one digit count (``00000``,
    ``frame_0001``); anything else gives ``[]``."""
    parts = [_NUMBERED.match(n) for n in names]
    if not parts or not all(parts) or len({(m[1], len(m[2])) for m in parts}) != 1:
        return []
    prefix, width = parts[0][1], len(parts[0][2])
    have = {int(m[2]) for m in parts}
    return [f"{prefix}{i:0{width}d}" for i in range(min(have), max(have) + 1) if i not in have]


class FrameSource:
    """Frames of a video, read one at a time (never all in memory).

    Args:
        source: a folder of frame images (sorted by name; the DAVIS convention ``00000.jpg``...) or a video
            file (mp4 and other containers OpenCV decodes).
    """

    def __init__(self, source: str | os.PathLike) -> None:
        self.source = Path(source)
        if not self.source.exists():
            raise InputError(f"{self.source}: video not found")
        if self.source.is_dir():
            self.paths = sorted(p for p in self.source.iterdir() if p.suffix.lower() in FRAME_EXTS)
            if not self.paths:
                raise InputError(f"{self.source}: folder holds no frames ({', '.join(FRAME_EXTS)})")
            self.names = [p.stem for p in self.paths]
            self.missing = missing_numbers(self.names)
            self.fps = 24.0
            first = load_image(self.paths[0])
            self.size = first.shape[:2]
        else:
            if self.source.stat().st_size == 0:
                raise InputError(f"{self.source}: empty file (0 bytes)")
            _quiet_ffmpeg()
            cap = cv2.VideoCapture(str(self.source))
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 24.0) if ok else 24.0
            cap.release()
            if not ok or frame is None:
                raise InputError(f"{self.source}: cannot decode video (not a video OpenCV can read)")
            self.paths = []
            self.missing = []
            self.size = frame.shape[:2]
            self._count = max(count, 1)
            self.names = [f"{i:05d}" for i in range(self._count)]

    last_frame: np.ndarray | None = None  # the frame most recently yielded by iteration
    missing: list[str]  # frame names absent from a numbered folder (00000, 00001, 00003 -> 00002)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[tuple[int, str, np.ndarray]]:
        """Yield ``(index, name, rgb uint8 [H, W, 3])`` in order; every frame must have the first's size."""
        if self.paths:
            for i, p in enumerate(self.paths):
                self.last_frame = self._check(load_image(p), f"{p}: frame")
                yield i, self.names[i], self.last_frame
            return
        cap = cv2.VideoCapture(str(self.source))
        try:
            i = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if i >= len(self.names):  # container under-reported its frame count
                    self.names.append(f"{i:05d}")
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                self.last_frame = self._check(rgb, f"{self.source}: frame {i}")
                yield i, self.names[i], self.last_frame
                i += 1
            del self.names[i:]
        finally:
            cap.release()

    def _check(self, frame: np.ndarray, what: str) -> np.ndarray:
        """``frame`` if it has the first frame's size, else a one-line error starting with ``what``."""
        if frame.shape[:2] != self.size:
            first = self.paths[0].name if self.paths else "frame 0"
            raise InputError(f"{what} is {frame.shape[1]}x{frame.shape[0]} but the first frame ({first}) is "
                             f"{self.size[1]}x{self.size[0]}; all frames of a video must have one size")
        return frame


class Mp4Writer:
    """Write RGB frames to an mp4 (``mp4v``) atomically: the file appears only on :meth:`close`."""

    def __init__(self, path: str | os.PathLike, fps: float, size_hw: tuple[int, int]) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}.mp4")
        _quiet_ffmpeg()
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                      (size_hw[1], size_hw[0]))
        if not self.writer.isOpened():
            raise InputError(f"{self.path}: cannot open a video writer")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self, keep: bool = True) -> None:
        self.writer.release()
        if keep:
            os.replace(self.tmp, self.path)
        elif self.tmp.exists():
            self.tmp.unlink()
