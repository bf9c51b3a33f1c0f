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


def run(cfg: DictConfig) -> int:
    """Serve ``conf/serve.yaml``'s model on ``host:port`` until interrupted; returns the exit code."""
    uvicorn, ServerSettings, create_app = _imports()
    settings = ServerSettings.from_mapping(cfg)
    if settings.default_strategy not in STRATEGIES or settings.default_strategy == "tuned":
        raise InputError(f"default_strategy={settings.default_strategy}: expected one of plain, spatial_ensemble, "
                         "feature_ensemble (tuned is chosen per request with a tuned prompt)")
    if not 0 < int(settings.port) < 65536:
        raise InputError(f"port={settings.port}: expected 1..65535")
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
