"""The server's limits and options (``conf/serve.yaml``), in one plain object."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class ServerSettings:
    """Limits and options of ``painter-seg serve`` (every field is a key of ``conf/serve.yaml``).

    Attributes:
        host: interface to bind; ``127.0.0.1`` (default) serves this machine only, ``0.0.0.0`` opens it.
        port: TCP port.
        token: when set, every ``/api`` request must carry ``Authorization: Bearer <token>`` (or
            ``X-Token``); ``/health``, the UI's static files and the docs stay open.
        default_strategy: strategy used when a request names none.
        default_seg_type: ``semantic`` | ``instance`` when a request names none.
        precision: autocast precision of every forward (``auto`` resolved per device).
        batch_size: queries per forward (targets of one request, or of queued requests with the same
            prompts, are batched up to this where the strategy allows).
        max_upload_mb: largest request body (MiB); larger ones get 413.
        max_video_mb: largest request body of a video upload (MiB).
        max_pixels: largest decoded image (width x height); larger ones get 413.
        max_targets: most target images in one request.
        max_prompts: most example pairs in one request.
        queue_size: most segment requests waiting for the model; more get 503 (with Retry-After).
        request_timeout: seconds a segment request waits for its result before 504.
        max_video_frames: most frames of a video job.
        max_video_jobs: most video jobs kept (running, queued or finished); the oldest finished one is
            removed to make room, and when all are running or queued a new one gets 503.
        results_kept: most segment results kept for ``GET /api/results/{id}/export.zip``.
        work_dir: the server's own folder for uploads it must keep (video frames, tuned prompts) and video
            outputs; None = a fresh temporary folder removed at shutdown.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    default_strategy: str = "plain"
    default_seg_type: str = "semantic"
    precision: str = "auto"
    batch_size: int = 4
    max_upload_mb: float = 32.0
    max_video_mb: float = 256.0
    max_pixels: int = 4096 * 4096
    max_targets: int = 32
    max_prompts: int = 16
    queue_size: int = 32
    request_timeout: float = 300.0
    max_video_frames: int = 1000
    max_video_jobs: int = 4
    results_kept: int = 32
    work_dir: str | None = None

    @classmethod
    def from_mapping(cls, cfg: Any) -> ServerSettings:
        """The fields of ``cfg`` (a dict or DictConfig) that name one of ours; others are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: cfg[k] for k in names if k in cfg and cfg[k] is not None})

    @property
    def is_local(self) -> bool:
        """Bound to a loopback interface only."""
        return self.host in ("127.0.0.1", "localhost", "::1")
