"""Lazy video frame sources (a folder of frames or an mp4) and an mp4 writer."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import InputError
from .images import load_image

FRAME_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


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
            self.fps = 24.0
            first = load_image(self.paths[0])
            self.size = first.shape[:2]
        else:
            if self.source.stat().st_size == 0:
                raise InputError(f"{self.source}: empty file (0 bytes)")
            cap = cv2.VideoCapture(str(self.source))
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 24.0) if ok else 24.0
            cap.release()
            if not ok or frame is None:
                raise InputError(f"{self.source}: cannot decode video (not a video OpenCV can read)")
            self.paths = []
            self.size = frame.shape[:2]
            self._count = max(count, 1)
            self.names = [f"{i:05d}" for i in range(self._count)]

    last_frame: np.ndarray | None = None  # the frame most recently yielded by iteration

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[tuple[int, str, np.ndarray]]:
        """Yield ``(index, name, rgb uint8 [H, W, 3])`` in order; every frame must have the first's size."""
        if self.paths:
            for i, p in enumerate(self.paths):
                self.last_frame = self._check(load_image(p), p)
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
                self.last_frame = self._check(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), f"frame {i}")
                yield i, self.names[i], self.last_frame
                i += 1
            del self.names[i:]
        finally:
            cap.release()

    def _check(self, frame: np.ndarray, where) -> np.ndarray:
        if frame.shape[:2] != self.size:
            raise InputError(f"{self.source}: {where} is {frame.shape[1]}x{frame.shape[0]}, but the first frame "
                             f"is {self.size[1]}x{self.size[0]} (all frames must have one size)")
        return frame


class Mp4Writer:
    """Write RGB frames to an mp4 (``mp4v``) atomically: the file appears only on :meth:`close`."""

    def __init__(self, path: str | os.PathLike, fps: float, size_hw: tuple[int, int]) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}.mp4")
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
