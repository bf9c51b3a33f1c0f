"""The HTTP API and browser UI of ``painter-seg serve`` (FastAPI): one model shared by every request.

Endpoints (OpenAPI docs at ``/docs``):

====================================  ==============================================================
``GET /health``                       200 ``{"status": "ok"}``
``GET /api/info``                     model, strategies, device, precision, limits
``POST /api/segment``                 multipart ``prompt_image`` / ``prompt_mask`` (repeatable, paired in
                                      order), ``target`` (repeatable), optional ``strategy``,
                                      ``seg_type``, ``tuned`` (id), ``class_names``, ``overlay``
``GET /api/results/{id}/export.zip``  ``?format=masks|coco|yolo|png``: a segment result's masks as files
``POST /api/tuned``, ``GET``          upload a tuned prompt (``artifact``), list them
``POST /api/video``                   ``frame`` (repeatable) or ``video`` (one file), optional
                                      ``first_mask``: a background propagation job
``POST /api/video/{id}/mask``         the first mask of a job uploaded without one
``GET /api/video/{id}``               status and progress; ``/first.jpg``, ``/overlay/{i}.jpg``,
                                      ``/masks.zip``; ``DELETE`` cancels and removes it
====================================  ==============================================================

Every refused request is a 4xx JSON ``{"error": "..."}`` (500 for a bug), and the server stays up. Uploads are
bounded in bytes (:class:`BodyLimit`) and pixels (:mod:`~painter_seg.server.uploads`); the server never opens
a path a client names.
"""
from __future__ import annotations

import base64
import contextlib
import io
import logging
import secrets
import shutil
import tempfile
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..apps.few_shot import Prediction
from ..apps.prompts import box_to_mask
from ..apps.video import VideoSettings
from ..codec import SegType
from ..errors import InputError
from ..io.export import EXPORT_FORMATS, ExportItem, export_files
from ..io.images import overlay as draw_overlay
from ..model import SegGPT
from ..strategies import STRATEGIES
from ..tuning import TunedPrompt
from .service import ModelService, SegmentRequest, strategy_info, wait
from .settings import ServerSettings
from .uploads import ApiError, UploadReader, display_name
from .video import VideoJob

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FRAME_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class BodyLimit:
    """ASGI middleware: a request body over the limit is refused with 413 JSON before it is parsed (from
    ``Content-Length``, or while it streams in when there is none).

    Args:
        app: the wrapped ASGI app.
        default: byte limit of every request.
        larger: ``{path prefix: byte limit}`` for endpoints that take bigger uploads (video).
    """

    def __init__(self, app, default: int, larger: dict[str, int]) -> None:
        self.app, self.default, self.larger = app, default, larger

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        limit = next((v for k, v in self.larger.items() if path.startswith(k)), self.default)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _send_json(send, 413, f"request body of {int(length)} bytes is over this server's "
                                               f"limit of {limit} bytes")
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return msg

        async def tracking_send(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, f"request body is over this server's limit of {limit} bytes")


class _TooLarge(Exception):
    pass


async def _send_json(send, status: int, message: str) -> None:
    body = JSONResponse({"error": message}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------- state


class ServerState:
    """Everything the routes share: settings, the model service, uploads, results, tuned prompts, videos."""

    def __init__(self, model: SegGPT, settings: ServerSettings, model_name: str,
                 video_settings: VideoSettings | None) -> None:
        self.settings, self.model_name, self.video_settings = settings, model_name, video_settings
        self.service = ModelService(model, settings.batch_size, settings.queue_size, settings.precision)
        self._own_dir = settings.work_dir is None
        self.work = Path(settings.work_dir or tempfile.mkdtemp(prefix="painter-seg-serve-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.reader = UploadReader(self.work / "tmp", settings.max_pixels)
        self.results: OrderedDict[str, tuple[list[ExportItem], dict[int, str], np.ndarray]] = OrderedDict()
        self.tuned: OrderedDict[str, TunedPrompt] = OrderedDict()
        self.videos: OrderedDict[str, VideoJob] = OrderedDict()
        self.lock = threading.Lock()

    def close(self) -> None:
        self.service.stop()
        for job in list(self.videos.values()):
            job.cancel()
        if self._own_dir:
            shutil.rmtree(self.work, ignore_errors=True)

    def keep_result(self, items: list[ExportItem], names: dict[int, str], palette: np.ndarray) -> str:
        rid = secrets.token_hex(8)
        with self.lock:
            self.results[rid] = (items, names, palette)
            while len(self.results) > self.settings.results_kept:
                self.results.popitem(last=False)
        return rid

    def video(self, vid: str) -> VideoJob:
        job = self.videos.get(vid)
        if job is None:
            raise ApiError(404, f"no video job {vid!r}")
        return job

    def make_room_for_video(self) -> None:
        """Drop the oldest finished jobs while the limit is reached; 503 when every job is still active."""
        with self.lock:
            while len(self.videos) >= self.settings.max_video_jobs:
                old = next((j for j in self.videos.values() if not j.active), None)
                if old is None:
                    raise ApiError(503, f"{len(self.videos)} video jobs are running or waiting; retry later "
                                        "or DELETE one")
                self.videos.pop(old.id).remove()


# ---------------------------------------------------------------------------------------------- helpers


def _read_upload(f: UploadFile, what: str, index: int) -> tuple[bytes, str]:
    if not hasattr(f, "file") or f.file is None:
        raise ApiError(400, f"{what}: expected a file upload")
    data = f.file.read()
    return data, display_name(f.filename, f"{what}_{index}")


def _png_b64(labels: np.ndarray, palette: np.ndarray) -> str:
    im = Image.fromarray(labels.astype(np.uint8))
    im.putpalette(palette.reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _jpeg_b64(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _palette(colors: dict[int, tuple[int, int, int]], stored: np.ndarray | None,
             asked: dict[int, tuple[int, int, int]] | None = None) -> np.ndarray:
    """256 x 3 palette of the returned masks and overlays: the colours the client asked for, else the
    uploaded mask's own colours where it had them, else the colours the ids were painted with."""
    pal = np.zeros((256, 3), np.uint8)
    for i, c in colors.items():
        pal[i] = c
    if stored is not None:
        own = stored[:256].any(axis=1)
        pal[: len(stored)][own] = stored[:256][own]
    for i, c in (asked or {}).items():
        pal[i] = c
    return pal


def _colors(text: str | None) -> dict[int, tuple[int, int, int]]:
    """``colors`` as JSON ``{"1": [r, g, b]}`` (ids 1..255, channels 0..255)."""
    import json

    if not text:
        return {}
    try:
        out = {int(k): tuple(int(c) for c in v) for k, v in json.loads(text).items()}
    except (ValueError, TypeError, AttributeError):
        out = None
    if out is None or any(not 0 < k < 256 or len(c) != 3 or not all(0 <= x < 256 for x in c)
                          for k, c in out.items()):
        raise ApiError(400, 'colors: expected a JSON object {"1": [r, g, b]} with ids 1..255')
    return out


def _class_names(text: str | None, tuned: TunedPrompt | None) -> dict[int, str]:
    """``class_names`` as a JSON object ``{"1": "cat"}`` or a comma list (ids 1, 2, ...); a tuned prompt's
    own names otherwise."""
    import json

    if not text:
        return dict(zip(tuned.class_ids, tuned.class_names)) if tuned is not None else {}
    try:
        obj = json.loads(text)
    except ValueError:
        obj = [s.strip() for s in text.split(",")]
    if isinstance(obj, list):
        return {i + 1: str(n) for i, n in enumerate(obj) if str(n)}
    if isinstance(obj, dict):
        try:
            return {int(k): str(v) for k, v in obj.items()}
        except ValueError:
            pass
    raise ApiError(400, "class_names: expected a JSON object {\"1\": \"name\"} or a comma-separated list")


def _parse_choices(strategy: str | None, seg_type: str | None, tuned: str | None, state: ServerState
                   ) -> tuple[str, str, TunedPrompt | None]:
    tuned_prompt = None
    if tuned:
        tuned_prompt = state.tuned.get(tuned)
        if tuned_prompt is None:
            raise ApiError(404, f"tuned={tuned}: no such tuned prompt (POST /api/tuned first)")
    strategy = strategy or ("tuned" if tuned_prompt is not None else state.settings.default_strategy)
    if strategy not in STRATEGIES:
        raise ApiError(400, f"strategy={strategy}: unknown; available: {', '.join(sorted(STRATEGIES))}")
    if strategy == "tuned" and tuned_prompt is None:
        raise ApiError(400, "strategy=tuned needs tuned=<id> (upload one with POST /api/tuned)")
    try:
        seg = str(SegType.parse(seg_type or state.settings.default_seg_type))
    except InputError as e:
        raise ApiError(400, str(e)) from None
    return strategy, seg, tuned_prompt


def _decode_request(state: ServerState, images: list[UploadFile], masks: list[UploadFile],
                    targets: list[UploadFile], tuned: TunedPrompt | None, mask_mode: str
                    ) -> tuple[list, list, list[str], list, list[str], np.ndarray | None]:
    s = state.settings
    if not targets:
        raise ApiError(400, "give at least one target image (multipart field 'target')")
    if len(targets) > s.max_targets:
        raise ApiError(413, f"{len(targets)} targets; this server takes at most {s.max_targets} per request")
    if len(images) > s.max_prompts:
        raise ApiError(413, f"{len(images)} example pairs; this server takes at most {s.max_prompts}")
    if len(images) != len(masks):
        raise ApiError(400, f"{len(images)} prompt_image but {len(masks)} prompt_mask: they are paired in order")
    if not images and tuned is None:
        raise ApiError(400, "give at least one example pair (prompt_image and prompt_mask) or tuned=<id>")
    p_imgs, p_masks, p_names, stored = [], [], [], None
    for k, (fi, fm) in enumerate(zip(images, masks)):
        data, name = _read_upload(fi, "prompt_image", k)
        p_imgs.append(state.reader.image(data, name))
        mdata, mname = _read_upload(fm, "prompt_mask", k)
        loaded = state.reader.mask(mdata, mname, mask_mode)
        stored = stored if stored is not None else loaded.palette
        p_masks.append(loaded.labels)
        p_names.append(mname)
    t_imgs, t_names = [], []
    for k, ft in enumerate(targets):
        data, name = _read_upload(ft, "target", k)
        t_imgs.append(state.reader.image(data, name))
        t_names.append(name)
    return p_imgs, p_masks, p_names, t_imgs, t_names, stored


def _results(names: list[str], images: list[np.ndarray], preds: list[Prediction], palette: np.ndarray,
             with_overlay: bool) -> tuple[list[dict], list[ExportItem]]:
    """One JSON result per target (label PNG at the target's size, ids, areas, optional overlay), and the
    label maps kept for export."""
    results, items = [], []
    for name, stem, img, pred in zip(names, _stems(names), images, preds):
        areas, scores = pred.areas(), pred.mean_scores()
        r = {"name": name, "width": img.shape[1], "height": img.shape[0],
             "mask_png": _png_b64(pred.labels, palette), "ids": sorted(areas),
             "classes": {str(i): {"area": a, "mean_score": round(scores[i], 4)} for i, a in areas.items()}}
        if with_overlay:
            r["overlay_jpg"] = _jpeg_b64(draw_overlay(img, pred.labels, palette))
        results.append(r)
        items.append(ExportItem(name, stem, pred.labels.astype(np.uint8)))
    return results, items


def _stems(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        stem = n.rsplit(".", 1)[0] or "target"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


# ---------------------------------------------------------------------------------------------- the app


def create_app(model: SegGPT, settings: ServerSettings | None = None, *, model_name: str | None = None,
               video_settings: VideoSettings | None = None) -> FastAPI:
    """The FastAPI app over ``model`` (shared by every request; a worker thread starts with it).

    Args:
        model: the network (``build_model(...)``), never modified.
        settings: limits and options (defaults: :class:`ServerSettings`).
        model_name: shown by ``/api/info`` (default ``model.config_name``).
        video_settings: propagation defaults (the model config's ``video:`` block); None = the model's own.
    """
    settings = settings or ServerSettings()
    state = ServerState(model, settings, model_name or str(getattr(model, "config_name", "model")),
                        video_settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()

    app = FastAPI(title="painter_seg", version="0.1.0", lifespan=lifespan,
                  description="In-context segmentation: example pairs in, masks out. All errors are JSON "
                              "{\"error\": \"...\"}.")
    app.state.server = state
    _install_errors(app)
    _install_auth(app, settings)
    _install_pages(app, state)
    _install_segment_routes(app, state)
    _install_tuned_routes(app, state)
    _install_video_routes(app, state)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    mb = 1024 * 1024
    app.add_middleware(BodyLimit, default=int(settings.max_upload_mb * mb),
                       larger={"/api/video": int(settings.max_video_mb * mb)})
    return app


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        headers = {"Retry-After": "2"} if exc.status == 503 else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                 for e in exc.errors()]
        return JSONResponse({"error": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


def _install_auth(app: FastAPI, settings: ServerSettings) -> None:
    if not settings.token:
        return
    token = str(settings.token)

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if request.url.path.startswith("/api"):
            auth = request.headers.get("authorization", "")
            given = (auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-token")
                     or request.query_params.get("token") or "")
            if not secrets.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"error": "missing or wrong token (Authorization: Bearer <token>)"},
                                    status_code=401)
        return await call_next(request)


def _install_pages(app: FastAPI, state: ServerState) -> None:
    s = state.settings

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return RedirectResponse("/static/favicon.svg")

    @app.get("/health")
    def health():
        """Liveness: 200 while the server runs."""
        return {"status": "ok"}

    @app.get("/api/info")
    def info():
        """The model, strategies, device, precision and limits of this server."""
        m = state.service.model
        return {
            "model": state.model_name, "half_size": list(m.half_size),
            "parameters": int(sum(p.numel() for p in m.parameters())),
            "device": str(state.service.device), "precision": state.service.precision,
            "torch": torch.__version__, "strategies": strategy_info(), "default_strategy": s.default_strategy,
            "seg_types": ["semantic", "instance"], "default_seg_type": s.default_seg_type,
            "export_formats": ["masks", *[f for f in EXPORT_FORMATS if f != "none"]],
            "limits": {"max_upload_mb": s.max_upload_mb, "max_video_mb": s.max_video_mb,
                       "max_pixels": s.max_pixels, "max_targets": s.max_targets,
                       "max_prompts": s.max_prompts, "queue_size": s.queue_size,
                       "max_video_frames": s.max_video_frames, "batch_size": s.batch_size},
            "queued": state.service.queued, "stats": dict(state.service.stats),
            "token_required": bool(s.token),
        }



def _install_segment_routes(app: FastAPI, state: ServerState) -> None:
    s = state.settings

    @app.post("/api/segment")
    def segment(
        prompt_image: Annotated[list[UploadFile] | None, File(description="example images")] = None,
        prompt_mask: Annotated[list[UploadFile] | None, File(description="their masks, in order")] = None,
        target: Annotated[list[UploadFile] | None, File(description="images to segment")] = None,
        strategy: Annotated[str | None, Form()] = None,
        seg_type: Annotated[str | None, Form()] = None,
        tuned: Annotated[str | None, Form(description="id from POST /api/tuned")] = None,
        class_names: Annotated[str | None, Form(description='{"1": "cat"} or "cat,dog"')] = None,
        overlay: Annotated[bool, Form(description="add a JPEG overlay per target")] = False,
        mask_mode: Annotated[str, Form(description="auto | ids (grey values are ids) | binary")] = "auto",
        colors: Annotated[str | None, Form(description='colours of the ids: {"1": [255, 0, 0]}')] = None,
    ):
        """Segment every ``target`` like the example pairs; one result per target, in order."""
        strategy, seg, tuned_p = _parse_choices(strategy, seg_type, tuned, state)
        names = _class_names(class_names, tuned_p)
        p_imgs, p_masks, p_names, t_imgs, t_names, stored = _decode_request(
            state, prompt_image or [], prompt_mask or [], target or [], tuned_p, mask_mode)
        asked = _colors(colors)
        req = SegmentRequest(p_imgs, p_masks, p_names, t_imgs, strategy, seg, tuned_p, tuned)
        preds = wait(state.service.submit(req), s.request_timeout)
        palette = _palette(preds[0].colors, stored, asked)
        results, items = _results(t_names, t_imgs, preds, palette, overlay)
        rid = state.keep_result(items, names, palette)
        return {"id": rid, "strategy": strategy, "seg_type": seg,
                "colors": {str(i): [int(c) for c in palette[i]] for i in preds[0].colors},
                "class_names": {str(k): v for k, v in names.items()}, "results": results}

    @app.get("/api/results/{rid}/export.zip")
    def export(rid: str, format: str = "masks"):
        """A segment result as a zip: ``masks`` (palette PNGs of the ids), ``coco``, ``yolo`` or ``png``
        (one binary PNG per target and id)."""
        with state.lock:
            found = state.results.get(rid)
        if found is None:
            raise ApiError(404, f"no result {rid!r} (results are kept for the last {s.results_kept} requests)")
        items, names, palette = found
        if format == "masks":
            files = {f"masks/{it.stem}.png": base64.b64decode(_png_b64(it.labels, palette)) for it in items}
        elif format in EXPORT_FORMATS and format != "none":
            files = {f"{format}/{rel}": data for rel, data in export_files(format, items, names).items()}
        else:
            raise ApiError(400, f"format={format}: expected masks, coco, yolo or png")
        return _zip_response(files, f"painter_seg_{format}.zip")

    @app.post("/api/prompt/box")
    def box_mask(image: Annotated[UploadFile, File()],
                 box: Annotated[str, Form(description="x0,y0,x1,y1 in pixels")]):
        """A one-object mask inside ``box`` (GrabCut, as ``set_prompts(boxes=...)``): the UI's box tool."""
        data, name = _read_upload(image, "image", 0)
        img = state.reader.image(data, name)
        try:
            x0, y0, x1, y1 = (float(v) for v in box.replace(" ", "").split(","))
        except ValueError:
            raise ApiError(400, f"box={box!r}: expected x0,y0,x1,y1") from None
        h, w = img.shape[:2]
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ApiError(400, f"box={box}: must satisfy 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}")
        try:
            mask = box_to_mask(img, (x0, y0, x1, y1)).astype(np.uint8)
        except InputError as e:
            raise ApiError(400, str(e)) from None
        pal = np.zeros((256, 3), np.uint8)
        pal[1] = 255
        return {"width": w, "height": h, "mask_png": _png_b64(mask, pal), "area": int(mask.sum())}



def _install_tuned_routes(app: FastAPI, state: ServerState) -> None:
    s = state.settings

    @app.post("/api/tuned")
    def upload_tuned(
        artifact: Annotated[UploadFile, File(description="a .safetensors from painter-seg tune")],
    ):
        """Register a tuned prompt for this server's model; use its ``id`` as ``tuned`` in /api/segment."""
        data = artifact.file.read()
        name = display_name(artifact.filename, "artifact")
        with tempfile.NamedTemporaryFile(dir=state.reader.tmp_dir, suffix=".safetensors") as f:
            f.write(data)
            f.flush()
            try:
                prompt = TunedPrompt.read(f.name)
                state.service.call(lambda m: prompt.check(m, name), timeout=s.request_timeout)
            except InputError as e:
                raise ApiError(400, str(e).replace(f.name, name)) from None
            except ApiError:
                raise
            except Exception as e:  # noqa: BLE001 - a corrupt file raises whatever safetensors raises
                raise ApiError(400, f"{name}: not a tuned prompt ({type(e).__name__})") from None
        tid = secrets.token_hex(8)
        with state.lock:
            state.tuned[tid] = prompt
            while len(state.tuned) > 16:
                state.tuned.popitem(last=False)
        return _tuned_info(tid, prompt)

    @app.get("/api/tuned")
    def list_tuned():
        """The tuned prompts this server holds."""
        return {"tuned": [_tuned_info(k, p) for k, p in state.tuned.items()]}


def _tuned_info(tid: str, p: TunedPrompt) -> dict:
    return {"id": tid, "class_ids": list(p.class_ids), "class_names": list(p.class_names),
            "seg_type": str(p.seg_type), "model": p.model_name}


def _zip_response(files: dict[str, bytes], filename: str) -> Response:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, data in files.items():
            z.writestr(rel, data)
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# ---------------------------------------------------------------------------------------------- video


def _save_video_source(state: ServerState, folder: Path, frames: list[UploadFile],
                       video: UploadFile | None) -> tuple[Path, list[str] | None]:
    """Write the uploaded frames (or video file) into the job's folder under the server's own names."""
    s = state.settings
    if bool(frames) == (video is not None):
        raise ApiError(400, "give either frames (multipart field 'frame', repeatable) or one 'video' file")
    if video is not None:
        data, name = _read_upload(video, "video", 0)
        ext = Path(name).suffix.lower()
        if ext not in VIDEO_EXTS:
            raise ApiError(400, f"{name}: expected a video file ({', '.join(VIDEO_EXTS)})")
        if not data:
            raise ApiError(400, f"{name}: empty file (0 bytes)")
        path = folder / f"video{ext}"
        path.write_bytes(data)
        return path, None
    if len(frames) > s.max_video_frames:
        raise ApiError(413, f"{len(frames)} frames; this server takes at most {s.max_video_frames}")
    src = folder / "source"
    src.mkdir()
    names = []
    for k, f in enumerate(frames):
        data, name = _read_upload(f, "frame", k)
        state.reader.image(data, name)  # decodable and within the pixel limit
        ext = Path(name).suffix.lower()
        (src / f"{k:05d}{ext if ext in FRAME_EXTS else '.png'}").write_bytes(data)
        names.append(name)
    return src, _stems(names)


def _check_context(context_frames: int | None) -> None:
    if context_frames is not None and not 0 <= context_frames <= 32:
        raise ApiError(400, f"context_frames={context_frames}: expected 0..32")


def _new_video_job(state: ServerState, frames: list[UploadFile], video: UploadFile | None, seg_type: str
                   ) -> VideoJob:
    """A job over the uploaded source, in a new folder of its own (removed again when the source is refused)."""
    s = state.settings
    folder = Path(tempfile.mkdtemp(prefix="video-", dir=state.work))
    try:
        source, names = _save_video_source(state, folder, frames, video)
        try:
            job = VideoJob(folder, source, names, state.video_settings, seg_type)
        except InputError as e:
            raise ApiError(400, str(e).replace(str(source), "video")) from None
        if job.total > s.max_video_frames:
            raise ApiError(413, f"video has {job.total} frames; this server takes at most {s.max_video_frames}")
        if job.size[0] * job.size[1] > s.max_pixels:
            raise ApiError(413, f"frames are {job.size[1]}x{job.size[0]}; at most {s.max_pixels} pixels")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return job


def _install_video_routes(app: FastAPI, state: ServerState) -> None:

    @app.post("/api/video")
    def create_video(
        frame: Annotated[list[UploadFile] | None, File(description="frames, in order")] = None,
        video: Annotated[UploadFile | None, File(description="or one video file (.mp4...)")] = None,
        first_mask: Annotated[UploadFile | None, File(description="ids of the first frame")] = None,
        context_frames: Annotated[int | None, Form()] = None,
        seg_type: Annotated[str, Form()] = "instance",
        mask_mode: Annotated[str, Form(description="auto | ids | binary")] = "auto",
        colors: Annotated[str | None, Form(description='colours of the ids: {"1": [255, 0, 0]}')] = None,
    ):
        """Start a propagation job (or prepare one: without ``first_mask`` it waits for
        ``POST /api/video/{id}/mask``)."""
        try:
            seg = str(SegType.parse(seg_type))
        except InputError as e:
            raise ApiError(400, str(e)) from None
        _check_context(context_frames)
        state.make_room_for_video()
        job = _new_video_job(state, frame or [], video, seg)
        try:
            if first_mask is not None:
                _set_first_mask(state, job, first_mask, context_frames, mask_mode, colors)
        except BaseException:
            job.remove()
            raise
        with state.lock:
            state.videos[job.id] = job
        if job.status == "queued":
            state.service.add_video(job)
        return job.info()

    @app.post("/api/video/{vid}/mask")
    def video_mask(
        vid: str,
        first_mask: Annotated[UploadFile, File()],
        context_frames: Annotated[int | None, Form()] = None,
        mask_mode: Annotated[str, Form(description="auto | ids | binary")] = "auto",
        colors: Annotated[str | None, Form(description='colours of the ids: {"1": [255, 0, 0]}')] = None,
    ):
        """Give the first frame's mask of a waiting job and start it."""
        job = state.video(vid)
        _check_context(context_frames)
        _set_first_mask(state, job, first_mask, context_frames, mask_mode, colors)
        state.service.add_video(job)
        return job.info()

    @app.get("/api/video/{vid}")
    def video_info(vid: str):
        """Status (waiting_mask, queued, running, done, failed, cancelled) and progress."""
        return state.video(vid).info()

    @app.get("/api/video/{vid}/first.jpg")
    def video_first(vid: str):
        """The first frame (to draw the mask on)."""
        return FileResponse(state.video(vid).folder / "first.jpg", media_type="image/jpeg")

    @app.get("/api/video/{vid}/overlay/{idx}.jpg")
    def video_overlay(vid: str, idx: int):
        """Frame ``idx`` with its propagated mask drawn over it."""
        return FileResponse(state.video(vid).overlay_path(idx), media_type="image/jpeg")

    @app.get("/api/video/{vid}/masks.zip")
    def video_zip(vid: str):
        """The propagated masks (palette PNGs named after the frames); 409 until the job is done."""
        job = state.video(vid)
        if job.status != "done":
            raise ApiError(409, f"video job {vid} is {job.status} ({job.done}/{job.total} frames)")
        return Response(job.zip_bytes(), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="masks_{vid}.zip"'})

    @app.delete("/api/video/{vid}")
    def video_delete(vid: str):
        """Cancel the job and remove its files."""
        job = state.video(vid)
        with state.lock:
            state.videos.pop(vid, None)
        job.remove()
        return {"id": vid, "status": "removed"}


def _set_first_mask(state: ServerState, job: VideoJob, upload: UploadFile, context_frames: int | None,
                    mask_mode: str, colors: str | None) -> None:
    asked = _colors(colors)
    data, name = _read_upload(upload, "first_mask", 0)
    job.set_mask(state.reader.mask(data, name, mask_mode), context_frames, asked)
