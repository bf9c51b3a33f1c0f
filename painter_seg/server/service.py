"""One model, one worker thread: every forward of the server runs here, never two at once.

Request threads hand work to :class:`ModelService` and wait on a :class:`~concurrent.futures.Future`:

- segment requests go through a bounded queue (full -> :class:`ApiError` 503). The worker takes the oldest
  request and, with it, every queued request with the same prompts, strategy and seg_type (a UI sending one
  prompt with many targets, or many clients of one labelling job), and paints all their targets with one
  :meth:`~painter_seg.apps.few_shot.FewShotSegmenter.predict_batch` call: ``batch_size`` queries per forward
  where the strategy batches queries (``plain``, ``spatial_ensemble``, ``tuned`` with one prompt), one by one
  under the feature ensemble.
- small calls that need the model (checking a tuned prompt's fingerprint) run as tasks of the same queue.
- video jobs (:class:`~painter_seg.server.video.VideoJob`) advance one frame per turn between segment
  requests, round robin, so a long video never blocks interactive use.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..apps.few_shot import FewShotSegmenter, Prediction
from ..errors import InputError
from ..model import SegGPT
from ..strategies import STRATEGIES
from ..tuning import TunedPrompt
from ..utils.runtime import resolve_precision
from .uploads import ApiError

log = logging.getLogger(__name__)

BATCHING = {"plain": True, "spatial_ensemble": True, "feature_ensemble": False, "tuned": True}
"""Whether a strategy paints several targets in one forward (``tuned``: when the tuned prompt is alone)."""


@dataclass
class SegmentRequest:
    """One ``POST /api/segment`` after decoding.

    Attributes:
        prompt_images: K ``[H, W, 3]`` uint8 RGB example images (may be empty with a tuned prompt).
        prompt_masks: K ``[H, W]`` int64 label maps, same sizes.
        prompt_names: K names for error messages.
        targets: ``[H, W, 3]`` uint8 RGB target images.
        strategy: a key of :data:`painter_seg.strategies.STRATEGIES`.
        seg_type: ``semantic`` | ``instance``.
        tuned: a checked tuned prompt, or None.
        tuned_id: its id (part of the batching key).
    """

    prompt_images: list[np.ndarray]
    prompt_masks: list[np.ndarray]
    prompt_names: list[str]
    targets: list[np.ndarray]
    strategy: str
    seg_type: str
    tuned: TunedPrompt | None = None
    tuned_id: str | None = None
    key: str = field(init=False)

    def __post_init__(self) -> None:
        h = hashlib.sha256(f"{self.strategy}|{self.seg_type}|{self.tuned_id}".encode())
        for img, mask in zip(self.prompt_images, self.prompt_masks):
            for a in (img, mask):
                h.update(str(a.shape).encode())
                h.update(np.ascontiguousarray(a).tobytes())
        self.key = h.hexdigest()


@dataclass
class _Task:
    future: Future
    request: SegmentRequest | None = None
    call: Callable[[SegGPT], Any] | None = None


class ModelService:
    """The model and the one thread that uses it.

    Args:
        model: the network (``build_model(...)``), shared by every request and strategy.
        batch_size: queries per forward.
        queue_size: most segment requests waiting; more are refused with 503.
        precision: ``auto`` | ``fp32`` | ``bf16`` | ``fp16`` (resolved for the model's device).
        max_group_targets: most targets painted in one worker turn (requests with the same prompts).
    """

    def __init__(self, model: SegGPT, batch_size: int = 4, queue_size: int = 32, precision: str = "auto",
                 max_group_targets: int = 64) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = max(1, int(batch_size))
        self.queue_size = max(1, int(queue_size))
        self.max_group_targets = max_group_targets
        self._tasks: deque[_Task] = deque()
        self._videos: deque = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._segmenters: dict[str, FewShotSegmenter] = {}
        self.stats = {"requests": 0, "targets": 0, "groups": 0, "video_frames": 0, "errors": 0}
        self._thread = threading.Thread(target=self._loop, name="painter-seg-model", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ request threads

    def submit(self, request: SegmentRequest) -> Future:
        """Queue a segment request; its future gives one :class:`Prediction` per target.

        Raises:
            ApiError: 503 when the queue is full or the service is stopping.
        """
        return self._put(_Task(Future(), request=request))

    def call(self, fn: Callable[[SegGPT], Any], timeout: float | None = None) -> Any:
        """Run ``fn(model)`` on the worker thread and return its result (its exception is raised here)."""
        return self._put(_Task(Future(), call=fn)).result(timeout)

    def _put(self, task: _Task) -> Future:
        with self._cond:
            if self._stop:
                raise ApiError(503, "server is shutting down")
            if len(self._tasks) >= self.queue_size:
                raise ApiError(503, f"server busy: {len(self._tasks)} requests queued; retry shortly")
            self._tasks.append(task)
            self._cond.notify()
        return task.future

    def add_video(self, job) -> None:
        """Let the worker advance ``job`` (``job.step(service)`` returns True when finished)."""
        with self._cond:
            self._videos.append(job)
            self._cond.notify()

    @property
    def queued(self) -> int:
        return len(self._tasks)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current turn, fail the queued requests with 503 and end the worker."""
        with self._cond:
            self._stop = True
            pending, self._tasks = list(self._tasks), deque()
            self._cond.notify_all()
        for t in pending:
            t.future.set_exception(ApiError(503, "server is shutting down"))
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------------ the worker

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._tasks and not self._videos and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                group = self._take_group()
                video = self._videos[0] if self._videos else None
                if video is not None:
                    self._videos.rotate(-1)
            if group:
                self._run_group(group)
            if video is not None:
                self._step_video(video)

    def _take_group(self) -> list[_Task]:
        """The oldest task and every queued segment request with its key (up to ``max_group_targets``)."""
        if not self._tasks:
            return []
        first = self._tasks.popleft()
        if first.request is None:
            return [first]
        group, rest, n = [first], deque(), len(first.request.targets)
        while self._tasks:
            t = self._tasks.popleft()
            fits = n + (len(t.request.targets) if t.request else 0) <= self.max_group_targets
            if t.request is not None and t.request.key == first.request.key and fits:
                group.append(t)
                n += len(t.request.targets)
            else:
                rest.append(t)
        self._tasks = rest
        return group

    def _run_group(self, group: list[_Task]) -> None:
        live = [t for t in group if t.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            if live[0].call is not None:
                live[0].future.set_result(live[0].call(self.model))
                return
            preds = self._predict(live[0].request, [im for t in live for im in t.request.targets])
            self.stats["groups"] += 1
            for t in live:
                n = len(t.request.targets)
                t.future.set_result(preds[:n])
                preds = preds[n:]
                self.stats["requests"] += 1
                self.stats["targets"] += n
        except Exception as e:  # noqa: BLE001 - every failure goes back to its requests; the worker lives on
            self.stats["errors"] += 1
            err = _as_api_error(e)
            for t in live:
                if not t.future.done():
                    t.future.set_exception(err)

    def _segmenter(self, strategy: str) -> FewShotSegmenter:
        if strategy not in self._segmenters:
            self._segmenters[strategy] = FewShotSegmenter(self.model, strategy=strategy,
                                                          precision=self.precision)
        return self._segmenters[strategy]

    @torch.inference_mode()
    def _predict(self, req: SegmentRequest, targets: list[np.ndarray]) -> list[Prediction]:
        seg = self._segmenter(req.strategy)
        if req.tuned is not None:
            seg.set_tuned_prompt(req.tuned, req.prompt_images, req.prompt_masks or None,
                                 names=req.prompt_names, check=False)
        else:
            seg.set_prompts(req.prompt_images, req.prompt_masks, names=req.prompt_names,
                            seg_type=req.seg_type)
        return seg.predict_batch(targets, batch_size=self.batch_size)

    def _step_video(self, job) -> None:
        try:
            finished = job.step(self)
            self.stats["video_frames"] += 1
        except Exception as e:  # noqa: BLE001 - the job records its error; the worker lives on
            job.fail(_as_api_error(e).message)
            finished = True
        if finished:
            with self._cond:
                if job in self._videos:
                    self._videos.remove(job)


def _as_api_error(e: BaseException) -> ApiError:
    """400 for the library's input errors (bad prompts, a count the strategy cannot take), else 500."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, (InputError, ValueError)):
        return ApiError(400, str(e))
    log.exception("model worker: unexpected error")
    return ApiError(500, f"internal error: {type(e).__name__}: {str(e)[:200]}")


def strategy_info() -> dict[str, dict]:
    """``{name: {"batches_targets": bool}}`` for every strategy of the library."""
    return {name: {"batches_targets": BATCHING.get(name, False)} for name in STRATEGIES}


def wait(future: Future, timeout: float) -> Any:
    """The future's result; 504 when it takes longer than ``timeout`` seconds."""
    from concurrent.futures import TimeoutError as FutureTimeout

    t0 = time.perf_counter()
    try:
        return future.result(timeout)
    except FutureTimeout:
        future.cancel()
        raise ApiError(504, f"no result after {time.perf_counter() - t0:.0f} s (server busy)") from None
