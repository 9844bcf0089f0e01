"""sd-webui-controlnet's HTTP routes at the app root, with its paths, parameters and bodies:

    GET  /controlnet/version                      {"version": 3}
    GET  /controlnet/model_list?update=true       {"model_list": ["control_v11p_sd15_canny [d14c016b]", ...]}
    GET  /controlnet/module_list?alias_names=...  {"module_list": [...], "module_detail": {name: {model_free, sliders}}}
    GET  /controlnet/settings                     {"control_net_unit_count": 3}
    POST /controlnet/detect                       {"images": [b64, ...], "info": "Success"}

`build_router(ext)` gives the APIRouter the extension returns from `app_router()`; the app adds
its auth and error mapping. Detect runs as a `DetectTask` on the one queue (detect.py).
Imported only when the app builds its routes (never by the UI or a job).
"""

from __future__ import annotations

import base64
from typing import Any, Optional

from fastapi import APIRouter, Body, Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from modules import image_files
from modules.api.caller import Caller
from modules.api.errors import FieldError
from modules.api.service import decode_image, wait_for_job

from controlnet_ext.detect import DetectInputError, DetectRequest, make_task, unavailable_reason
from controlnet_ext.preprocessors import PreprocessorUnavailableError

API_VERSION = 3  # sd-webui-controlnet's external_code.get_api_version()
# DetectRequest field -> the body field a client sent it as
DETECT_FIELDS = {"module": "controlnet_module", "images": "controlnet_input_images", "masks": "controlnet_masks",
                 "processor_res": "controlnet_processor_res", "threshold_a": "controlnet_threshold_a",
                 "threshold_b": "controlnet_threshold_b"}


# ---------------------------------------------------------------------------------------------
# bodies


class VersionResponse(BaseModel):
    version: int


class ModelListResponse(BaseModel):
    model_list: list[str] = Field(description="Titles with the short hash, as units' `model` takes them")


class SliderInfo(BaseModel):
    name: str
    value: float
    min: float
    max: float
    step: float


class ModuleDetail(BaseModel):
    # sd-webui-controlnet's meaning: the module works without a ControlNet model (its reference_*
    # modules). Every module here feeds a model, so it is False; weight files are in module_unavailable.
    model_free: bool
    # (resolution, threshold a, threshold b); null where the module has no such slider
    sliders: list[Optional[SliderInfo]]


class ModuleListResponse(BaseModel):
    module_list: list[str]
    module_detail: dict[str, ModuleDetail]
    # beyond sd-webui-controlnet: modules that cannot run here -> why (the weight files to put where)
    module_unavailable: dict[str, str] = Field(default_factory=dict)


class SettingsResponse(BaseModel):
    control_net_unit_count: int


class DetectBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list, description="base64 images")
    controlnet_processor_res: int = Field(-1, description="-1: the module's default")
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[Optional[str]] = Field(default_factory=list, description="base64 masks, white = masked")
    low_vram: bool = False  # accepted; maps are computed one image at a time anyway


class DetectResponse(BaseModel):
    images: list[str]
    info: str


# ---------------------------------------------------------------------------------------------
# the router


def build_router(ext: Any) -> APIRouter:
    """The /controlnet/* routes over `ext` (its .library, .preprocessors, .unit_count and .env)."""
    router = APIRouter(tags=["controlnet"])
    basic = HTTPBasic(auto_error=False)

    def owner(given: Optional[HTTPBasicCredentials] = Depends(basic)) -> Optional[str]:
        """The job's owner: with --api-auth, the user the app's own auth dependency has just checked
        on this request. Without auth every caller sees every job, so a name sent anyway is harmless."""
        return given.username if given is not None else None

    @router.get("/controlnet/version", response_model=VersionResponse)
    def version() -> VersionResponse:
        return VersionResponse(version=API_VERSION)

    @router.get("/controlnet/model_list", response_model=ModelListResponse)
    def model_list(update: bool = True) -> ModelListResponse:
        if update:
            ext.library.refresh()
        return ModelListResponse(model_list=[f.title for f in ext.library.files])

    @router.get("/controlnet/module_list", response_model=ModuleListResponse)
    def module_list(alias_names: bool = False) -> ModuleListResponse:
        return module_listing(ext.preprocessors, alias_names)

    @router.get("/controlnet/settings", response_model=SettingsResponse)
    def settings() -> SettingsResponse:
        return SettingsResponse(control_net_unit_count=ext.unit_count)

    @router.post("/controlnet/detect", response_model=DetectResponse)
    async def detect(request: Request, body: DetectBody = Body(...),
                     user: Optional[str] = Depends(owner)) -> DetectResponse:
        return await run_detect_request(ext, body, user, request.is_disconnected)

    return router


def module_listing(preprocessors: Any, alias_names: bool) -> ModuleListResponse:
    names = preprocessors.names(alias_names=alias_names)
    detail, unavailable = {}, {}
    for name in names:
        entry = preprocessors.entry(name)
        detail[name] = ModuleDetail(model_free=False, sliders=entry.sliders_json())
        reason = unavailable_reason(preprocessors, entry)
        if reason:
            unavailable[name] = reason
    return ModuleListResponse(module_list=names, module_detail=detail, module_unavailable=unavailable)


async def run_detect_request(ext: Any, body: DetectBody, user: Optional[str], is_disconnected) -> DetectResponse:
    """Decode and check (422 naming the field) before queueing; await the task; encode the maps."""
    context = ext.env.app.context
    task = await run_in_threadpool(_prepare, ext, body)
    job = context.queue.submit(task, owner=user)
    try:
        result = await wait_for_job(context.queue, job, Caller(user=user, is_disconnected=is_disconnected))
    except PreprocessorUnavailableError as err:  # its files went away after the check
        raise FieldError.single("controlnet_module", str(err)) from None
    images = await run_in_threadpool(_encode, context, result.maps)
    return DetectResponse(images=images, info="Interrupted" if result.interrupted else "Success")


def _prepare(ext: Any, body: DetectBody):
    max_pixels = ext.env.app.context.settings.get().max_image_pixels
    images = [decode_image(data, ("controlnet_input_images", i), max_pixels)
              for i, data in enumerate(body.controlnet_input_images)]
    masks = [decode_image(data, ("controlnet_masks", i), max_pixels) if data is not None else None
             for i, data in enumerate(body.controlnet_masks)]
    request = DetectRequest(module=body.controlnet_module, images=images, masks=masks,
                            processor_res=body.controlnet_processor_res, threshold_a=body.controlnet_threshold_a,
                            threshold_b=body.controlnet_threshold_b)
    try:
        return make_task(ext, request)
    except DetectInputError as err:
        raise FieldError.single(DETECT_FIELDS.get(err.field, err.field), err.message) from None


def _encode(context: Any, maps: list) -> list[str]:
    """In the samples format, as sd-webui-controlnet encodes them (A1111's encode_pil_to_base64)."""
    opts = context.settings.get()
    return [base64.b64encode(image_files.encode_image(m, opts.samples_format, "", quality=opts.jpeg_quality).data)
            .decode("ascii") for m in maps]


__all__ = ["build_router", "module_listing", "DetectBody", "DetectResponse", "ModuleListResponse",
           "ModelListResponse", "SettingsResponse", "VersionResponse"]
