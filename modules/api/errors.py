"""Every error an API route can meet, mapped to an HTTP response in ONE place.

Routes and the service raise plain exceptions (the engine's, the registry's, the ones below);
`ErrorMapper.to_response` turns each into a JSON body shaped like A1111's
(`{"error": type, "detail": ..., "body": "", "errors": text}`) with the right status:

    422  a field is invalid (names the field), an image does not decode, an unknown upscaler (names
         the field, lists the valid names), an unknown script or
         extension, or its args (alwayson_scripts.<title>...) do not validate,
         a width x height past the device's limit (names both and the setting), an extension's
         hook error whose cause carries `request_field` (the field it refused; e.g. a ControlNet
         unit's model of another family than the checkpoint)
    400  a body that does not parse (not JSON, or nested too deeply)
    404  unknown sampler / schedule type / model / VAE / task (lists the valid names)
    503  no usable model at all; the job queue is full (with Retry-After); under --ray, every run of
         the job lost its replica (max_attempts); the NSFW filter is on
         but its safety checker is not installed (the body names the folder and files)
    409  a task id that is already queued or running
    401  missing or wrong credentials (auth.py raises it)
    499  the client went away while its job waited or ran (the job was stopped; nobody reads it)
    500  an extension's hook failed during the job (the body names the extension and the hook;
         the job ended cleanly), out of memory (readable message; memory is freed so the next request works) and
         anything unexpected (logged with its traceback; the server carries on)

`mapping_route_class` wraps every route of the API router, so nothing escapes unmapped and
gradio's own routes (when mounted beside the UI) keep their own handling.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Callable, Iterable, Optional, Sequence

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException  # FastAPI's HTTPException is a subclass; its own
                                                # body parsing raises this one

from modules.extensions.runner import ExtensionArgsError, ExtensionHookError, UnknownExtensionError
from modules.jobs.queue import DuplicateTaskError, QueueFullError, UnknownTaskError
from modules.models.errors import ModelError, NoModelError, UnknownModelError
from modules.postprocess.safety import SafetyCheckerUnavailableError
from modules.postprocess.upscalers import UnknownUpscalerError
from modules.processing.limits import SizeLimitError
from modules.processing.samplers import UnknownSamplerError
from modules.serve.dispatch import ReplicasUnavailableError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# errors the API layer raises itself


class ApiError(Exception):
    status_code = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class FieldError(ApiError):
    """One or more request fields are invalid; `errors` are FastAPI-style {loc, msg, type}."""

    status_code = 422

    def __init__(self, errors: Sequence[dict[str, Any]]) -> None:
        self.errors = [dict(e) for e in errors]
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in self.errors)
        super().__init__(text)

    @classmethod
    def single(cls, field: str | Sequence[Any], msg: str, type_: str = "value_error") -> "FieldError":
        loc = ("body", field) if isinstance(field, str) else ("body", *field)
        return cls([{"loc": loc, "msg": msg, "type": type_}])


class InvalidImageError(FieldError):
    def __init__(self, field: str | Sequence[Any], reason: str) -> None:
        loc = ("body", field) if isinstance(field, str) else ("body", *field)
        super().__init__([{"loc": loc, "msg": f"not a valid base64-encoded image: {reason}",
                           "type": "invalid_image"}])


class UnknownScriptError(ApiError):
    status_code = 422

    def __init__(self, field: str, name: str, valid: Iterable[str]) -> None:
        valid = list(valid)
        choices = ", ".join(valid) if valid else "none are installed"
        super().__init__(f"{field}: script {name!r} not found; available scripts: {choices}",
                         field=field, valid=valid)


class ClientGoneError(ApiError):
    """The client closed the connection while its job waited or ran; the job was stopped.
    Nobody reads this answer (499, nginx's "client closed request")."""

    status_code = 499


# ---------------------------------------------------------------------------------------------
# the mapping


def _is_out_of_memory(exc: BaseException) -> bool:
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
        return True
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _free_accelerator_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # freeing memory is best effort
        log.debug("could not empty the CUDA cache", exc_info=True)


def error_body(exc: BaseException, detail: Any, **extra: Any) -> dict[str, Any]:
    body = {"error": type(exc).__name__, "detail": detail, "body": "", "errors": str(detail)}
    body.update(extra)
    return body


class ErrorMapper:
    """Turns exceptions into responses. `valid_names(kind)` lists checkpoints ("checkpoint") or
    VAEs ("vae") for 404 bodies; it is given by whoever owns the registry."""

    def __init__(self, valid_names: Optional[Callable[[str], list[str]]] = None) -> None:
        self._valid_names = valid_names

    def _names(self, kind: str) -> list[str]:
        if self._valid_names is None:
            return []
        try:
            return list(self._valid_names(kind))
        except Exception:  # listing must never turn a 404 into a 500
            log.warning("could not list %s names", kind, exc_info=True)
            return []

    def to_response(self, exc: Exception) -> JSONResponse:
        status, body, headers = self._map(exc)
        return AsciiJSONResponse(status_code=status, content=jsonable_encoder(body), headers=headers)

    def _map(self, exc: Exception) -> tuple[int, dict[str, Any], Optional[dict[str, str]]]:
        if isinstance(exc, HTTPException):
            detail = exc.detail
            if isinstance(exc.__cause__, RecursionError):  # json.loads on [[[[... 100,000 deep
                detail = "the request body is not valid JSON: it is nested too deeply"
            return exc.status_code, error_body(exc, detail), getattr(exc, "headers", None)
        if isinstance(exc, SizeLimitError):
            errors = [{"loc": ("body", name), "msg": str(exc), "type": "size_limit"} for name in exc.fields]
            return 422, error_body(exc, errors, errors=str(exc), limit=exc.limit), None
        if isinstance(exc, QueueFullError):
            return 503, error_body(exc, str(exc), retry_after=exc.retry_after_s), {
                "Retry-After": str(exc.retry_after_s)}
        if isinstance(exc, DuplicateTaskError):
            return 409, error_body(exc, str(exc)), None
        if isinstance(exc, RequestValidationError):
            errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
            return 422, error_body(exc, errors, errors=FieldError(errors).message), None
        if isinstance(exc, FieldError):
            return 422, error_body(exc, exc.errors, errors=exc.message), None
        if isinstance(exc, UnknownUpscalerError):
            loc = ("body", exc.field) if isinstance(exc.field, str) else ("body", *exc.field)
            errors = [{"loc": loc, "msg": str(exc), "type": "unknown_upscaler"}]
            return 422, error_body(exc, errors, errors=str(exc), valid=exc.valid_names), None
        if isinstance(exc, ApiError):
            return exc.status_code, error_body(exc, exc.message, **exc.extra), None
        if isinstance(exc, UnknownSamplerError):
            return 404, error_body(exc, str(exc), kind=exc.kind, valid=list(exc.valid)), None
        if isinstance(exc, UnknownModelError):
            valid = self._names("vae" if exc.kind.lower() == "vae" else "checkpoint")
            message = f"{exc} Valid {exc.kind} names: {', '.join(valid) or '(none)'}"
            return 404, error_body(exc, message, kind=exc.kind, valid=valid, close_matches=exc.close_matches), None
        if isinstance(exc, (NoModelError, ReplicasUnavailableError)):
            return 503, error_body(exc, str(exc)), None
        if isinstance(exc, SafetyCheckerUnavailableError):  # filter_nsfw is on: the server lacks the checker
            return 503, error_body(exc, str(exc)), None
        if isinstance(exc, ModelError):  # an unusable or unloadable model file: the message names it
            log.error("model error in an API request: %s", exc)
            return 500, error_body(exc, str(exc)), None
        if isinstance(exc, UnknownTaskError):
            task = exc.args[0] if exc.args else ""
            return 404, error_body(exc, f"unknown task id {task!r}"), None
        if isinstance(exc, ExtensionHookError) and isinstance(getattr(exc.cause, "request_field", None), tuple):
            # the hook refused a value of the request (ControlNet: a model of another family than the
            # checkpoint) and says which field; the client's to fix, not a server failure
            errors = [{"loc": ("body", *exc.cause.request_field), "msg": str(exc.cause), "type": "value_error"}]
            return 422, error_body(exc, errors, errors=FieldError(errors).message, extension=exc.extension,
                                   hook=exc.hook), None
        if isinstance(exc, ExtensionHookError):  # the job ended cleanly; the extension is named
            log.error("%s", exc)
            return 500, error_body(exc, str(exc), extension=exc.extension, hook=exc.hook), None
        if isinstance(exc, UnknownExtensionError):  # a request built past the API's own check
            errors = [{"loc": ("body", "alwayson_scripts", exc.name), "msg": str(exc), "type": "unknown_script"}]
            return 422, error_body(exc, errors, errors=str(exc)), None
        if isinstance(exc, ExtensionArgsError):
            errors = [{"loc": ("body", "alwayson_scripts", exc.name, *e["loc"]), "msg": e["msg"], "type": e["type"]}
                      for e in exc.errors]
            return 422, error_body(exc, errors, errors=FieldError(errors).message), None
        if _is_out_of_memory(exc):
            _free_accelerator_memory()
            first_line = (str(exc).strip().splitlines() or [""])[0]
            message = ("out of memory while generating; try a smaller width/height or batch_size, "
                       f"or start with --medvram / --lowvram. ({first_line})")
            log.error("out of memory in an API request: %s", first_line)
            return 500, error_body(exc, message), None
        log.error("unexpected error in an API request", exc_info=exc)
        return 500, error_body(exc, f"{type(exc).__name__}: {exc}"), None


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error body may quote client text holding a lone surrogate
    ("a\\ud800b"), which cannot be encoded as UTF-8 but is valid as a JSON escape."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def mapping_route_class(mapper: ErrorMapper) -> type[APIRoute]:
    """An APIRoute class whose handler answers every exception through `mapper`."""

    class MappedErrorsRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:  # noqa: BLE001 - this is the one place errors are mapped
                    return mapper.to_response(exc)

            return handle

    return MappedErrorsRoute
