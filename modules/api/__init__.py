"""A1111-compatible HTTP API (/sdapi/v1) over the one job queue.

    mount_api(app, ctx)      --api: the routes beside the gradio UI, same app and port
    create_api_app(ctx)      --nowebui: a FastAPI app serving the API alone (docs at /docs)
    bind_host(args)          127.0.0.1, or 0.0.0.0 with --listen (--server-name wins)

Layers (vLLM's shape): routes.py (thin) → service.py (A1111 JSON ↔ GenerationRequest / result)
→ ctx.queue → engine; schemas.py holds every request/response model; errors.py maps every
exception to an HTTP status in one place; auth.py does --api-auth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modules.api.auth import bind_host, credentials_from_args, make_auth_dependency

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modules.api.service import ApiService
    from modules.app_context import AppContext

API_TITLE = "Stable Diffusion web UI API"


def _build(ctx: "AppContext"):
    from fastapi import APIRouter, Depends
    from fastapi.responses import JSONResponse

    from modules.api.errors import ErrorMapper, mapping_route_class
    from modules.api.routes import build_router
    from modules.api.service import ApiService

    service = ApiService(ctx)
    mapper = ErrorMapper(lambda kind: service.valid_names(kind))
    auth = make_auth_dependency(credentials_from_args(ctx.args))
    router = build_router(service, mapper, auth)
    add_extension_routes(router, ctx)
    # Extensions' routes at the app root (/controlnet/*), behind the same auth and error mapping;
    # joined to /sdapi/v1's router so one include carries both.
    root = APIRouter(route_class=mapping_route_class(mapper), default_response_class=JSONResponse)
    add_extension_routes(root, ctx, at_root=True, dependencies=[Depends(auth)] if auth else [])
    root.include_router(router)
    return service, root, auth


def add_extension_routes(router, ctx: "AppContext", at_root: bool = False, dependencies=()) -> None:
    """Routes of typed extensions: `JobExtension.api_router` (e.g. /loras) join /sdapi/v1,
    `app_router` (at_root) the app's root; the same auth and error mapping cover both."""
    loaded = getattr(ctx, "extensions", None)
    for ext in (loaded.extension_set if loaded is not None else ()):
        extra = ext.app_router() if at_root else ext.api_router()
        for route in (extra.routes if extra is not None else ()):
            # re-added on our router, so its route class (the error mapping) and auth apply
            router.add_api_route(route.path, route.endpoint, methods=list(route.methods), name=route.name,
                                 response_model=route.response_model,
                                 dependencies=[*dependencies, *route.dependencies],
                                 summary=route.summary, description=route.description)


def mount_api(app: "FastAPI", ctx: "AppContext") -> "ApiService":
    """Add /sdapi/v1 to an existing app (gradio's). Our routes go first, so no catch-all route of
    the host app can shadow them; /docs is added when the host app has none. With auth, the host
    app's own open schema route is replaced by one behind the same credentials."""
    from modules.api.routes import add_docs_page, add_docs_routes

    service, router, auth = _build(ctx)
    openapi_url = app.openapi_url or "/openapi.json"
    if auth is not None and app.openapi_url:
        app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != openapi_url]
    paths = {getattr(r, "path", None) for r in app.router.routes}
    before = len(app.router.routes)
    app.include_router(router)
    if "/docs" not in paths:
        if openapi_url in paths:  # the host app serves its schema (no auth); add the page over it
            add_docs_page(app, auth, openapi_url)
        else:
            add_docs_routes(app, auth, openapi_url)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added
    app.openapi_schema = None  # rebuilt with our routes on the next request
    return service


def create_api_app(ctx: "AppContext") -> "FastAPI":
    """The API alone (--nowebui): /sdapi/v1/*, /docs and /openapi.json, all behind --api-auth."""
    from fastapi import FastAPI

    from modules.api.routes import add_docs_routes, add_root_redirect

    service, router, auth = _build(ctx)
    app = FastAPI(title=API_TITLE, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    add_docs_routes(app, auth)
    add_root_redirect(app)
    app.state.api_service = service
    return app


__all__ = ["mount_api", "create_api_app", "bind_host", "make_auth_dependency", "credentials_from_args"]
