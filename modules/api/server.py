"""--nowebui: serve the API alone with uvicorn, on 127.0.0.1 (or 0.0.0.0 with --listen) and --port."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from modules.api import bind_host, create_api_app
from modules.app_context import AppContext

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)


def build_served_app(ctx: AppContext) -> "FastAPI":
    """The --nowebui app as served: the API, then the extensions' on_app_started (no UI: demo None)."""
    from modules.extensions.startup import app_started

    app = create_api_app(ctx)
    app_started(None, app)
    return app


def serve_api(ctx: AppContext) -> None:
    """Blocks until the server stops (Ctrl+C); the job queue is shut down on the way out."""
    import uvicorn

    host, port = bind_host(ctx.args), int(getattr(ctx.args, "port", None) or 7860)
    app = build_served_app(ctx)
    log.info("API at http://%s:%d/sdapi/v1 (docs at /docs)", host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=30)
    finally:
        ctx.queue.shutdown()
