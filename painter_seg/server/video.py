"""Video propagation as a background job of the server: frames or a video file uploaded once, a first mask,
then one frame per worker turn (:class:`~painter_seg.server.service.ModelService`), with progress, overlay
frames to play and the masks as a zip.

A job's files live in its own folder under the server's work folder, named by the server:
``source/`` (the uploaded frames ``00000.<ext>``... or ``video.<ext>``), ``first.jpg``, ``masks/<frame>.png``
(palette PNGs of the object ids) and ``overlay/<index>.jpg``.
"""
from __future__ import annotations

import io
import secrets
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..apps.video import VideoPropagator, VideoSettings, object_colors
from ..io.files import atomic_write_bytes
from ..io.images import overlay
from ..io.masks import LoadedMask, save_label_png
from ..io.video import FrameSource
from .uploads import ApiError

STATES = ("waiting_mask", "queued", "running", "done", "failed", "cancelled")


def jpeg_bytes(rgb: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class VideoJob:
    """One video: its source, first mask, progress and outputs.

    Args:
        folder: the job's own folder (created by the server).
        source: frames folder or video file inside ``folder``.
        names: output name (no suffix) of each frame, in order.
        settings: propagation settings (the model config's ``video:`` block).
        seg_type: ``instance`` (objects) or ``semantic``.
    """

    def __init__(self, folder: Path, source: Path, names: list[str] | None, settings: VideoSettings | None,
                 seg_type: str = "instance") -> None:
        self.id = secrets.token_hex(8)
        self.folder, self.source = folder, source
        self.frames = FrameSource(source)  # raises InputError for an unreadable source
        self.names = names or list(self.frames.names)
        self.settings, self.seg_type = settings, seg_type
        self.status, self.error = "waiting_mask", None
        self.done, self.total = 0, len(self.frames)
        self.objects: list[int] = []
        self.created, self.started, self.finished = time.time(), None, None
        self._gen = None
        self._lock = threading.Lock()
        (folder / "masks").mkdir()
        (folder / "overlay").mkdir()
        first = next(iter(FrameSource(source)))[2]
        atomic_write_bytes(folder / "first.jpg", jpeg_bytes(first))

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.frames.size)

    def set_mask(self, mask: LoadedMask, context_frames: int | None = None,
                 colors: dict[int, tuple[int, int, int]] | None = None) -> None:
        """Give the first frame's mask and queue the job; ``colors`` (id -> RGB) override the colours of the
        written masks and overlays (default: the mask file's own palette, else fixed colours per id).

        Raises:
            ApiError: 409 if the job already has a mask, 400 for a mask of another size or without objects.
        """
        labels = mask.labels
        if self.status != "waiting_mask":
            raise ApiError(409, f"video job {self.id} is {self.status}; it already has its mask")
        if labels.shape != self.size:
            raise ApiError(400, f"first_mask is {labels.shape[1]}x{labels.shape[0]} but the frames are "
                                f"{self.size[1]}x{self.size[0]}")
        if labels.max(initial=0) > 255 or not labels.any():
            raise ApiError(400, "first_mask: needs object ids 1..255 (it is all background or above 255)")
        self.labels = labels
        self.palette = object_colors(np.unique(labels[labels > 0]))
        if mask.palette is not None:  # the user's own colours, as the propagate job keeps them
            keep = mask.palette.any(axis=1, keepdims=True)
            self.palette[: len(mask.palette)] = np.where(keep, mask.palette, self.palette[: len(mask.palette)])
        for i, c in (colors or {}).items():
            self.palette[i] = c
        self.context_frames = context_frames
        self.objects = [int(i) for i in np.unique(labels[labels > 0])]
        self.status = "queued"

    # ------------------------------------------------------------------------ worker thread only
    def step(self, service) -> bool:
        """Propagate one more frame (the worker thread calls this); True when the job is over."""
        with self._lock:
            if self.status in ("done", "failed", "cancelled"):
                return True
            if self._gen is None:
                prop = VideoPropagator(service.model, self.settings, context_frames=self.context_frames,
                                       seg_type=self.seg_type, precision=service.precision)
                state = prop.init(self.frames)
                prop.add_mask(state, 0, self.labels)
                self._state, self._gen = state, prop.propagate(state)
                self.status, self.started = "running", time.time()
            try:
                idx, labels = next(self._gen)
            except StopIteration:
                self.status, self.finished, self._gen = "done", time.time(), None
                return True
            name = self.names[idx] if idx < len(self.names) else f"{idx:05d}"  # mp4 under-reported
            save_label_png(self.folder / "masks" / f"{name}.png", labels, self.palette)
            frame = self._state.frames.last_frame
            atomic_write_bytes(self.folder / "overlay" / f"{idx:05d}.jpg",
                               jpeg_bytes(overlay(frame, labels, self.palette)))
            self.done, self.total = idx + 1, max(self.total, idx + 1)
            return False

    def fail(self, message: str) -> None:
        with self._lock:
            self.status, self.error, self.finished, self._gen = "failed", message, time.time(), None

    # ------------------------------------------------------------------------ request threads
    def cancel(self) -> None:
        with self._lock:
            if self.status not in ("done", "failed"):
                self.status, self.finished, self._gen = "cancelled", time.time(), None

    @property
    def active(self) -> bool:
        return self.status in ("waiting_mask", "queued", "running")

    def info(self) -> dict:
        """The job as ``GET /api/video/{id}`` shows it."""
        elapsed = (self.finished or time.time()) - self.started if self.started else 0.0
        return {"id": self.id, "status": self.status, "error": self.error, "done": self.done,
                "total": self.total, "progress": round(self.done / max(self.total, 1), 4),
                "width": self.size[1], "height": self.size[0], "objects": self.objects,
                "fps": round(self.done / elapsed, 3) if elapsed > 0 else None}

    def overlay_path(self, idx: int) -> Path:
        if not 0 <= idx < self.done:
            raise ApiError(404, f"frame {idx} is not propagated yet ({self.done} of {self.total} done)")
        return self.folder / "overlay" / f"{idx:05d}.jpg"

    def zip_bytes(self) -> bytes:
        """The masks written so far as a zip (``masks/<frame>.png``)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for p in sorted((self.folder / "masks").glob("*.png")):
                z.write(p, f"masks/{p.name}")
        return buf.getvalue()

    def remove(self) -> None:
        self.cancel()
        shutil.rmtree(self.folder, ignore_errors=True)
