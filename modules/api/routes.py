"""The /sdapi/v1 routes: each one line over `ApiService`. Auth and error mapping wrap them all."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from modules.api import schemas
from modules.api.auth import user_dependency
from modules.api.caller import Caller
from modules.api.errors import ErrorMapper, mapping_route_class
from modules.api.extras_api import ExtrasService
from modules.api.service import ApiService

PREFIX = "/sdapi/v1"


def _task(task_id: Optional[str], id_task: Optional[str]) -> Optional[str]:
    return task_id or id_task or None


def build_router(service: ApiService, mapper: ErrorMapper, auth: Optional[Callable]) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["sdapi"], dependencies=[Depends(auth)] if auth else [],
                       route_class=mapping_route_class(mapper), default_response_class=JSONResponse)
    task_q = Query(None, description="A task id (force_task_id); default: the running job "
                                     "(with auth: the caller's own job)")
    id_task_q = Query(None, description="Same as task_id (the web UI's name)")
    current_user = user_dependency(auth)  # the auth dependency itself: FastAPI runs it once per request
    user_dep = Depends(current_user)

    def caller(request: Request, user: Optional[str] = user_dep) -> Caller:
        return Caller(user=user, is_disconnected=request.is_disconnected)

    # ---- generation
    @router.post("/txt2img", response_model=schemas.TextToImageResponse)
    async def txt2img(body: schemas.Txt2ImgRequest, who: Caller = Depends(caller)):
        return await service.txt2img(body, who)

    @router.post("/img2img", response_model=schemas.ImageToImageResponse)
    async def img2img(body: schemas.Img2ImgRequest, who: Caller = Depends(caller)):
        return await service.img2img(body, who)

    extras = ExtrasService(service.ctx)

    @router.post("/extra-single-image", response_model=schemas.ExtrasSingleImageResponse)
    async def extra_single_image(body: schemas.ExtrasSingleImageRequest, who: Caller = Depends(caller)):
        return await extras.single_image(body, who)

    @router.post("/extra-batch-images", response_model=schemas.ExtrasBatchImagesResponse)
    async def extra_batch_images(body: schemas.ExtrasBatchImagesRequest, who: Caller = Depends(caller)):
        return await extras.batch_images(body, who)

    @router.post("/png-info", response_model=schemas.PNGInfoResponse)
    def png_info(body: schemas.PNGInfoRequest):
        return service.png_info(body)

    # ---- progress and control
    @router.get("/progress", response_model=schemas.ProgressResponse)
    def progress(skip_current_image: bool = False, task_id: Optional[str] = task_q,
                 id_task: Optional[str] = id_task_q, user: Optional[str] = user_dep):
        return service.progress(_task(task_id, id_task), skip_current_image, user)

    @router.post("/interrupt")
    def interrupt(task_id: Optional[str] = task_q, id_task: Optional[str] = id_task_q,
                  user: Optional[str] = user_dep):
        return service.interrupt(_task(task_id, id_task), user)

    @router.post("/skip")
    def skip(task_id: Optional[str] = task_q, id_task: Optional[str] = id_task_q, user: Optional[str] = user_dep):
        return service.skip(_task(task_id, id_task), user)

    # ---- settings and flags
    @router.get("/options", response_model=dict[str, Any])
    def get_options():
        return service.get_options()

    @router.post("/options")
    def set_options(changes: dict[str, Any] = Body(...)):
        return service.set_options(changes)

    @router.get("/cmd-flags", response_model=dict[str, Any])
    def cmd_flags():
        return service.cmd_flags()

    # ---- models
    @router.get("/sd-models", response_model=list[schemas.SDModelItem])
    def sd_models():
        return service.sd_models()

    @router.get("/sd-vae", response_model=list[schemas.SDVaeItem])
    def sd_vae():
        return service.sd_vaes()

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints():
        return service.refresh_checkpoints()

    @router.post("/refresh-vae")
    def refresh_vae():
        return service.refresh_vae()

    @router.post("/unload-checkpoint")
    def unload_checkpoint():
        return service.unload_checkpoint()

    @router.post("/reload-checkpoint")
    def reload_checkpoint():
        return service.reload_checkpoint()

    # ---- lists
    @router.get("/samplers", response_model=list[schemas.SamplerItem])
    def samplers_list():
        return service.sampler_items()

    @router.get("/schedulers", response_model=list[schemas.SchedulerItem])
    def schedulers_list():
        return service.scheduler_items()

    @router.get("/prompt-styles", response_model=list[schemas.PromptStyleItem])
    def prompt_styles():
        return service.prompt_styles()

    @router.get("/memory", response_model=schemas.MemoryResponse)
    def memory():
        return service.memory()

    @router.get("/upscalers", response_model=list[schemas.UpscalerItem])
    def upscalers():
        return service.upscaler_items()

    @router.get("/latent-upscale-modes", response_model=list[schemas.LatentUpscalerModeItem])
    def latent_upscale_modes():
        return service.latent_upscale_modes()

    @router.get("/realesrgan-models", response_model=list[schemas.RealesrganItem])
    def realesrgan_models():
        return service.realesrgan_models()

    @router.get("/face-restorers", response_model=list[schemas.FaceRestorerItem])
    def face_restorers():
        return service.face_restorer_items()

    # (/embeddings, /refresh-embeddings and /hypernetworks: extensions-builtin/textual-inversion.)
    @router.get("/scripts", response_model=schemas.ScriptsList)
    def scripts():
        return schemas.ScriptsList(txt2img=service.available_scripts(False), img2img=service.available_scripts(True))

    @router.get("/script-info", response_model=list[schemas.ScriptInfo])
    def script_info():
        return service.script_infos()

    @router.get("/extensions", response_model=list[schemas.ExtensionItem])
    def extensions():
        return service.extension_items()

    return router


SWAGGER_DIR = Path(__file__).parent / "static" / "swagger-ui"
SWAGGER_URL = "/sdapi-static/swagger-ui"


def add_docs_page(app: FastAPI, auth: Optional[Callable], openapi_url: str = "/openapi.json",
                  docs_url: str = "/docs") -> None:
    """Swagger UI from the copy shipped in static/ (FastAPI's default loads it from a CDN,
    which an offline machine cannot reach)."""
    deps = [Depends(auth)] if auth else []

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - docs",
                                   swagger_js_url=f"{SWAGGER_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER_URL}/swagger-ui.css", swagger_favicon_url="")

    async def asset(name: str) -> FileResponse:
        if name not in ("swagger-ui-bundle.js", "swagger-ui.css"):
            raise HTTPException(status_code=404, detail=f"no docs asset {name!r}")
        return FileResponse(SWAGGER_DIR / name)

    app.add_api_route(docs_url, docs, methods=["GET"], include_in_schema=False, dependencies=deps)
    app.add_api_route(SWAGGER_URL + "/{name}", asset, methods=["GET"], include_in_schema=False)


def add_docs_routes(app: FastAPI, auth: Optional[Callable], openapi_url: str = "/openapi.json",
                    docs_url: str = "/docs") -> None:
    """OpenAPI schema and Swagger UI, behind the same auth as the API."""
    deps = [Depends(auth)] if auth else []

    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    app.add_api_route(openapi_url, openapi, methods=["GET"], include_in_schema=False, dependencies=deps)
    add_docs_page(app, auth, openapi_url, docs_url)


def add_root_redirect(app: FastAPI, target: str = "/docs") -> None:
    async def root() -> RedirectResponse:
        return RedirectResponse(target)

    app.add_api_route("/", root, methods=["GET"], include_in_schema=False)
