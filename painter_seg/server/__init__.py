"""``painter-seg serve``: a local HTTP API and browser UI over one shared model.

    from painter_seg import build_model
    from painter_seg.server import ServerSettings, create_app

    app = create_app(build_model("default"), ServerSettings(port=8000))   # any ASGI server runs it

Needs the ``app`` extra (``pip install "painter_seg[app]"``: fastapi, uvicorn, python-multipart, pycocotools).
"""
from .app import create_app
from .service import ModelService, SegmentRequest
from .settings import ServerSettings

__all__ = ["ModelService", "SegmentRequest", "ServerSettings", "create_app"]
