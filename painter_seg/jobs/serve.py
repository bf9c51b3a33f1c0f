"""The server job (``painter-seg serve``): load one model, serve the HTTP API and browser UI with uvicorn."""
from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig

from ..apps.video import VideoSettings
from ..build import build_model
from ..errors import InputError
from ..strategies import STRATEGIES
from ..utils.runtime import resolve_device

log = logging.getLogger(__name__)


def _imports():
    try:
        import uvicorn

        from ..server import ServerSettings, create_app
    except ImportError as e:
        raise InputError(f"painter-seg serve needs the app extra ({e.name} is missing): "
                         "pip install 'painter_seg[app]'") from None
    return uvicorn, ServerSettings, create_app


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_AT_LEAST_ONE = ("batch_size", "queue_size", "max_pixels", "max_targets", "max_prompts", "max_video_frames",
                 "max_video_jobs")
_POSITIVE = ("max_upload_mb", "max_video_mb", "request_timeout")


def check_settings(settings, log_level: str) -> None:
    """The limits, defaults and folders of ``conf/serve.yaml``, checked before the model loads and the server
    starts (one line naming the key)."""
    from ..codec import SegType
    from ..io.files import check_output_dir

    if not str(settings.host).strip():
        raise InputError("host=: expected an interface (127.0.0.1, 0.0.0.0, a host name)")
    try:
        SegType.parse(settings.default_seg_type)
    except InputError:
        raise InputError(f"default_seg_type={settings.default_seg_type}: expected semantic or instance") from None
    for key in _AT_LEAST_ONE:
        if not getattr(settings, key) >= 1:
            raise InputError(f"{key}={getattr(settings, key)}: expected an integer >= 1")
    if not settings.results_kept >= 0:
        raise InputError(f"results_kept={settings.results_kept}: expected an integer >= 0")
    for key in _POSITIVE:
        if not getattr(settings, key) > 0:
            raise InputError(f"{key}={getattr(settings, key)}: expected a number > 0")
    if log_level.lower() not in LOG_LEVELS:
        raise InputError(f"log_level={log_level}: expected one of {', '.join(LOG_LEVELS)}")
    if settings.work_dir is not None:
        check_output_dir(settings.work_dir)


def run(cfg: DictConfig) -> int:
    """Serve ``conf/serve.yaml``'s model on ``host:port`` until interrupted; returns the exit code."""
    uvicorn, ServerSettings, create_app = _imports()
    settings = ServerSettings.from_mapping(cfg)
    if settings.default_strategy not in STRATEGIES or settings.default_strategy == "tuned":
        raise InputError(f"default_strategy={settings.default_strategy}: expected one of plain, spatial_ensemble, "
                         "feature_ensemble (tuned is chosen per request with a tuned prompt)")
    if not 0 < int(settings.port) < 65536:
        raise InputError(f"port={settings.port}: expected 1..65535")
    check_settings(settings, str(cfg.get("log_level", "info")))
    model = build_model(cfg.model, checkpoint=cfg.checkpoint, device=resolve_device(cfg.device))
    video = VideoSettings.from_config(cfg.model.get("video"))
    app = create_app(model, settings, model_name=str(cfg.model.name), video_settings=video)
    if not settings.is_local and not settings.token:
        print(f"warning: host={settings.host} serves every machine that reaches this one, without a token "
              "(set token=<secret>)", file=sys.stderr, flush=True)
    print(f"painter-seg serve: model {cfg.model.name} on {app.state.server.service.device} "
          f"({app.state.server.service.precision}); UI http://{settings.host}:{settings.port}/ , API docs "
          f"http://{settings.host}:{settings.port}/docs", flush=True)
    uvicorn.run(app, host=settings.host, port=int(settings.port), log_level=str(cfg.get("log_level", "info")))
    return 0
