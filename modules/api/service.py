"""The serving layer: A1111 API requests in, `GenerationRequest`s to the one queue, A1111 responses out.

Routes stay thin: each calls one method here. Generation methods do their CPU work (decoding
and encoding images) in the thread pool and *await* the job's future, so the event loop stays
free for /progress, /interrupt and /skip while jobs run. Errors are raised as exceptions and
turned into HTTP responses by errors.py alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as _dt
import io
import json
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional, Sequence

from PIL import Image
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from modules import heap, image_files
from modules import infotext as infotext_mod
from modules.app_context import AppContext
from modules.api import extensions_api, hires_fields, schemas
from modules.api.caller import LOCAL, Caller
from modules.api.errors import ClientGoneError, FieldError, InvalidImageError, UnknownScriptError
from modules.jobs.queue import Job, JobQueue
from modules.models.errors import ModelError, NoModelError, UnknownModelError
from modules.postprocess import image_finish
from modules.processing import image_ops, samplers
from modules.processing.latent_upscale import LATENT_MODES
from modules.generation.request import (GenerationRequest, HiresOptions, InpaintArea, InpaintOptions, MaskedContent, Mode,
                                       ResizeMode, RngSource, ScriptCall)
from modules.generation.result import GenerationResult
from modules.settings import Options
from modules.settings_paths import escaping_paths
from modules.styles import StyleDatabase

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.5  # how often a waiting request checks that its client is still there

RESIZE_MODES = (ResizeMode.JUST_RESIZE, ResizeMode.CROP_AND_RESIZE, ResizeMode.RESIZE_AND_FILL)
INPAINTING_FILL = (MaskedContent.FILL, MaskedContent.ORIGINAL, MaskedContent.LATENT_NOISE,
                   MaskedContent.LATENT_NOTHING)

# override_settings that change this one request (everything else is accepted and reported
# in info.warnings as not applied per request).
OVERRIDE_TO_REQUEST = {
    "sd_model_checkpoint": "checkpoint",
    "sd_vae": "vae",
    "CLIP_stop_at_last_layers": "clip_skip",
    "randn_source": "rng_source",
    "face_restoration": "restore_faces",  # A1111: the default of a request that leaves it out
    "tiling": "tiling",
}
OVERRIDES_FOR_ENCODING = ("samples_format", "jpeg_quality")

# A1111 fields accepted for compatibility that change nothing here yet (reported when set)
NOT_APPLIED_FIELDS = ("s_min_uncond", "image_cfg_scale", "initial_noise_multiplier", "refiner_switch_at")
# A1111's sampler parameters: request fields of the same name (samplers.step_options applies them)
SAMPLER_PARAM_FIELDS = ("eta", "s_churn", "s_tmin", "s_tmax", "s_noise")

# GenerationRequest field -> the API field a client sent it as (for 422 messages)
REQUEST_TO_API = {
    "batch_count": ("n_iter",),
    "clip_skip": ("override_settings", "CLIP_stop_at_last_layers"),
    "checkpoint": ("override_settings", "sd_model_checkpoint"),
    "vae": ("override_settings", "sd_vae"),
    "rng_source": ("override_settings", "randn_source"),
    "init_images": ("init_images",),
    "mode": ("init_images",),
    "inpaint": ("mask",),
}
INPAINT_TO_API = {
    "mask": "mask",
    "mask_blur": "mask_blur",
    "masked_content": "inpainting_fill",
    "inpaint_area": "inpaint_full_res",
    "only_masked_padding": "inpaint_full_res_padding",
    "invert_mask": "inpainting_mask_invert",
}
# request_fields_from_infotext keys -> the API fields that, when sent, win over the infotext
INFOTEXT_FIELD_SOURCES = {
    "prompt": ("prompt",), "negative_prompt": ("negative_prompt",), "steps": ("steps",),
    "sampler_name": ("sampler_name", "sampler_index"), "scheduler": ("scheduler",), "cfg_scale": ("cfg_scale",),
    "seed": ("seed",), "width": ("width",), "height": ("height",), "subseed": ("subseed",),
    "subseed_strength": ("subseed_strength",), "seed_resize_from_w": ("seed_resize_from_w",),
    "seed_resize_from_h": ("seed_resize_from_h",), "denoising_strength": ("denoising_strength",),
    "restore_faces": ("restore_faces",), "tiling": ("tiling",),
    **{name: (name,) for name in SAMPLER_PARAM_FIELDS},
}
INFOTEXT_OVERRIDES = {"clip_skip": "CLIP_stop_at_last_layers", "rng_source": "randn_source",
                      "checkpoint": "sd_model_checkpoint", "vae": "sd_vae"}
INFOTEXT_INPAINT_SOURCES = {"mask_blur": ("mask_blur", "mask_blur_x", "mask_blur_y"),
                            "masked_content": ("inpainting_fill",), "inpaint_area": ("inpaint_full_res",),
                            "only_masked_padding": ("inpaint_full_res_padding",),
                            "invert_mask": ("inpainting_mask_invert",)}
# infotext keys A1111 keeps out of Processed.extra_generation_params
CORE_INFOTEXT_KEYS = {"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "VAE hash", "VAE",
                      "Variation seed", "Variation seed strength", "Seed resize from", "Denoising strength",
                      "Clip skip", "RNG", "Version", "Face restoration", "Tiling"}


# ---------------------------------------------------------------------------------------------
# images in and out


def decode_image(data: Any, field: str | Sequence[Any], max_pixels: int) -> Image.Image:
    """A base64 string (plain or a data: URL) -> a loaded PIL image; InvalidImageError (422) otherwise.
    An image over `max_pixels` is refused from its header, before its pixels are decoded."""
    if not isinstance(data, str) or not data.strip():
        raise InvalidImageError(field, "empty")
    try:
        raw = image_ops.base64_bytes(data)
    except ValueError as err:
        raise InvalidImageError(field, str(err)) from None
    try:
        return image_ops.open_image(io.BytesIO(raw), max_pixels)
    except image_ops.ImageTooLargeError as err:
        raise FieldError.single(field, str(err), "image_too_large") from None
    except Image.DecompressionBombError as err:  # PIL's own bound, met while reading the header
        raise FieldError.single(field, f"image too large ({err}); the limit is {max_pixels:,} pixels "
                                       "(setting max_image_pixels)", "image_too_large") from None
    except Exception as err:  # PIL raises many types for non-images and truncated files
        raise InvalidImageError(field, f"cannot read it as an image ({type(err).__name__}: {err})") from None


def encode_image(image: Image.Image, infotext: str = "", fmt: str = "png", quality: int = 80) -> str:
    """Base64 of the image in the samples format with its infotext: the bytes a saved file holds."""
    return base64.b64encode(image_files.encode_image(image, fmt, infotext, quality=quality).data).decode("ascii")


async def wait_for_job(queue: JobQueue, job: Job, caller: Caller) -> Any:
    """Await a queued job's result; if the client goes away meanwhile, the job leaves the line or
    is interrupted (ClientGoneError, 499)."""
    waiting = asyncio.wrap_future(job.future)
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
        if done:
            return waiting.result()
        if await caller.is_disconnected():
            queue.cancel(job, "Cancelled: the client disconnected")
            waiting.cancel()  # the job's own future still resolves (cancelled or interrupted)
            log.info("client of %s disconnected; job stopped", job.id)
            raise ClientGoneError(f"the client of {job.id} disconnected; the job was stopped")


# ---------------------------------------------------------------------------------------------
# mapping


@dataclass
class Prepared:
    """A validated API request, ready for the queue."""

    request: GenerationRequest
    task_id: Optional[str]
    send_images: bool
    samples_format: str
    jpeg_quality: int
    warnings: list[str] = field(default_factory=list)


def _loc(request_loc: Sequence[Any], from_infotext: set[str]) -> tuple[Any, ...]:
    """A GenerationRequest error location -> the API field the value came from."""
    if not request_loc:
        return ("body",)
    head, rest = request_loc[0], tuple(request_loc[1:])
    if head in from_infotext:
        return ("body", "infotext", head, *rest)
    if head == "inpaint" and rest and rest[0] in INPAINT_TO_API:
        return ("body", INPAINT_TO_API[rest[0]], *rest[1:])
    if head == "hires" and rest and rest[0] in hires_fields.HIRES_TO_API:
        return ("body", hires_fields.HIRES_TO_API[rest[0]], *rest[1:])
    return ("body", *REQUEST_TO_API.get(head, (head,)), *rest)


def _field_errors(err: ValidationError, from_infotext: set[str] = frozenset(),
                  prefix: Sequence[Any] = ()) -> FieldError:
    errors = []
    for e in err.errors(include_url=False):
        loc = _loc((*prefix, *e["loc"]), from_infotext)
        msg = e["msg"].removeprefix("Value error, ")
        errors.append({"loc": loc, "msg": msg, "type": e["type"]})
    return FieldError(errors)


_clean_name = schemas.clean_name


class ApiService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.styles = StyleDatabase(ctx.paths.styles_file)

    # =========================================================================== generation
    async def txt2img(self, body: schemas.Txt2ImgRequest, caller: Caller = LOCAL) -> schemas.TextToImageResponse:
        prepared = await run_in_threadpool(self.prepare, body, False)
        job, result = await self._run(prepared, caller)
        return await run_in_threadpool(self.respond, body, prepared, job, result, schemas.TextToImageResponse)

    async def img2img(self, body: schemas.Img2ImgRequest, caller: Caller = LOCAL) -> schemas.ImageToImageResponse:
        trim = True  # a refused request may have decoded some of its images already
        try:
            prepared = await run_in_threadpool(self.prepare, body, True)
            trim = prepared.request.input_pixels >= heap.TRIM_AFTER_PIXELS
            job, result = await self._run(prepared, caller)
            return await run_in_threadpool(self.respond, body, prepared, job, result, schemas.ImageToImageResponse)
        finally:
            prepared = job = result = None  # drop the decoded images, then give their memory back
            if trim:  # glibc keeps freed blocks in its arenas: the process would stay at its peak
                await run_in_threadpool(heap.release_free_memory)

    async def _run(self, prepared: Prepared, caller: Caller) -> tuple[Job, GenerationResult]:
        """Queue the job (the queue may refuse it: size limit 422, full 503, task id 409) and await it."""
        queue = self.ctx.queue
        job = queue.submit(prepared.request, prepared.task_id, owner=caller.user)  # previews: the queue's setting
        job.control.previews_when_watched = True  # rendered only once /progress asks for them
        return job, await wait_for_job(queue, job, caller)

    # ---------------------------------------------------------------- request -> GenerationRequest
    def prepare(self, body: schemas._GenerationBase, is_img2img: bool) -> Prepared:
        warnings: list[str] = []
        self._refuse_unbuilt_features(body)
        script = self._script_call(body, is_img2img)
        sent = set(body.model_fields_set)
        if body.model_extra:
            warnings.append("ignored unknown field(s): " + ", ".join(sorted(body.model_extra)))
        unapplied = sorted(k for k in NOT_APPLIED_FIELDS if getattr(body, k, None) is not None)
        if unapplied:
            warnings.append("accepted but not applied: " + ", ".join(unapplied))

        overrides = dict(body.override_settings or {})
        infotext_fields, infotext_inpaint, infotext_hires = self._infotext_fields(body, sent, overrides, is_img2img,
                                                                                 warnings)
        opts = self._options_with_overrides(overrides, warnings)
        extensions = self._extension_args(body, is_img2img, warnings)

        sampler = body.sampler_name or body.sampler_index or "Euler"
        fields: dict[str, Any] = dict(
            prompt=body.prompt or "", negative_prompt=body.negative_prompt or "",
            styles=tuple(self._known_styles(body.styles or [], warnings)),
            seed=body.seed, subseed=body.subseed, subseed_strength=body.subseed_strength,
            seed_resize_from_w=body.seed_resize_from_w, seed_resize_from_h=body.seed_resize_from_h,
            sampler_name=sampler, scheduler=body.scheduler or samplers.AUTOMATIC,
            steps=body.steps, cfg_scale=body.cfg_scale, width=body.width, height=body.height,
            **{name: getattr(body, name) for name in SAMPLER_PARAM_FIELDS},
            batch_count=body.n_iter, batch_size=body.batch_size,
            clip_skip=opts.CLIP_stop_at_last_layers, rng_source=RngSource(opts.randn_source),
            checkpoint=_clean_name(overrides.get("sd_model_checkpoint")),
            vae=_clean_name(overrides.get("sd_vae")),
            save_images=body.save_images, save_grid=body.save_images, extensions=extensions, script=script,
            # A1111: left out (null) = the face_restoration / tiling setting
            restore_faces=opts.face_restoration if body.restore_faces is None else body.restore_faces,
            tiling=opts.tiling if body.tiling is None else body.tiling,
        )
        fields.update(infotext_fields)
        if fields["styles"]:  # as the UI does: the styles go into the prompts, their names into infotext
            fields["prompt"], fields["negative_prompt"] = self.styles.apply(
                fields["prompt"], fields["negative_prompt"], fields["styles"])
        for key in ("seed_resize_from_w", "seed_resize_from_h"):  # A1111's -1 (and 0) mean off
            fields[key] = max(0, fields[key])
        from_infotext = set(infotext_fields)

        inpaint = None
        if is_img2img:
            assert isinstance(body, schemas.Img2ImgRequest)
            fields["mode"], fields["init_images"], inpaint = self._img2img_fields(
                body, sent, infotext_inpaint, warnings)
            fields["denoising_strength"] = fields.get("denoising_strength", body.denoising_strength)
            fields["resize_mode"] = RESIZE_MODES[body.resize_mode]
        else:  # only hires fix uses it in txt2img, but a value out of 0..1 is still an error
            assert isinstance(body, schemas.Txt2ImgRequest)
            from_text = fields.pop("denoising_strength", None)
            if body.denoising_strength is not None:
                fields["denoising_strength"] = body.denoising_strength
            hires = hires_fields.hires_values(body, sent, infotext_hires, fields, warnings, self.styles)
            if hires is not None:
                if body.denoising_strength is None and from_text is not None:
                    fields["denoising_strength"] = from_text
                fields["hires"] = hires

        # unknown sampler / schedule names: 404 with the valid names before the job waits in line
        samplers.resolve(fields["sampler_name"], fields["scheduler"])
        self._check_model_names(fields.get("checkpoint"), fields.get("vae"))
        self._check_postprocess_models(fields["restore_faces"], from_infotext)

        hires_options = None
        if fields.get("hires") is not None:
            try:
                hires_options = HiresOptions(**fields.pop("hires"))
            except ValidationError as err:
                raise _field_errors(err, prefix=("hires",)) from None
            hires_fields.check_hires(hires_options, fields, self.ctx.postprocess)
        try:
            request = GenerationRequest(**fields, inpaint=inpaint, hires=hires_options)
        except ValidationError as err:
            raise _field_errors(err, from_infotext) from None
        self._check_script(request, body.script_args)
        return Prepared(request=request, task_id=_clean_name(body.force_task_id), send_images=body.send_images,
                        samples_format=str(opts.samples_format), jpeg_quality=int(opts.jpeg_quality),
                        warnings=warnings)

    @staticmethod
    def _refuse_unbuilt_features(body: schemas._GenerationBase) -> None:
        """Say clearly what is not built yet instead of quietly producing something else."""
        if _clean_name(body.refiner_checkpoint):
            raise FieldError.single("refiner_checkpoint", "the refiner is not available yet")
        if isinstance(body, schemas.Img2ImgRequest):
            if not 0 <= body.resize_mode < len(RESIZE_MODES):
                raise FieldError.single("resize_mode", "must be 0 (just resize), 1 (crop and resize) or "
                                                       f"2 (resize and fill), got {body.resize_mode}")
            if not 0 <= body.inpainting_fill < len(INPAINTING_FILL):
                raise FieldError.single("inpainting_fill", "must be 0 (fill), 1 (original), 2 (latent noise) or "
                                                           f"3 (latent nothing), got {body.inpainting_fill}")
            if body.inpainting_mask_invert not in (0, 1):
                raise FieldError.single("inpainting_mask_invert", f"must be 0 or 1, got {body.inpainting_mask_invert}")
            if _clean_name(body.latent_mask):
                raise FieldError.single("latent_mask", "a separate latent mask is not supported; send `mask`")

    def _check_postprocess_models(self, restore_faces: bool, from_infotext: set[str]) -> None:
        """Before the job waits in line: the face restorer the settings name (422 on restore_faces)
        and, with filter_nsfw on, the safety checker (503: the server lacks it, not the request)."""
        post, opts = self.ctx.postprocess, self.ctx.settings.get()
        if post is None:  # a context built without postprocessing: the engine checks at job start
            return
        if restore_faces:
            from modules.postprocess.face_restoration import FaceRestorerMissingError

            try:
                image_finish.require_face_restorer(post, opts.face_restoration_model)
            except FaceRestorerMissingError as err:
                field = ("infotext", "restore_faces") if "restore_faces" in from_infotext else "restore_faces"
                raise FieldError.single(field, str(err), "face_restorer_missing") from None
        if opts.filter_nsfw:
            post.safety.require()

    def available_scripts(self, is_img2img: bool) -> list[str]:
        """/sdapi/v1/scripts for a tab: A1111's lowercase script titles, then typed extensions."""
        return extensions_api.script_titles(self.ctx.extensions, is_img2img)

    def _script_call(self, body: schemas._GenerationBase, is_img2img: bool) -> Optional[ScriptCall]:
        """`script_name` + `script_args` -> the request's ScriptCall: this app's selectable scripts
        run (their Args validated here, 422 naming the position in script_args); A1111 selectable
        scripts from user extensions are listed but do not run yet."""
        name = _clean_name(body.script_name)
        if name is None or name.lower() == "none":
            return None
        scripts = self.ctx.extensions.selectable
        script = scripts.find(name)
        if script is None or not script.visible(is_img2img):
            a1111 = [s.title for s in self.ctx.extensions.scripts.selectable if s.is_img2img == is_img2img]
            if name.lower() in {t.lower() for t in a1111}:
                raise FieldError.single("script_name", f"script {name!r} is installed, but running A1111 selectable "
                                                       "scripts (script_name) is not available yet", "not_available")
            raise UnknownScriptError("script_name", name, [s.title for s in scripts.for_tab(is_img2img)] + a1111)
        try:
            return scripts.call(name, body.script_args, is_img2img)
        except ValidationError as err:
            raise self._script_args_error(script, err, body.script_args) from None

    @staticmethod
    def _script_args_error(script, err, sent) -> FieldError:
        from modules.extensions.selectable import args_error_position

        return FieldError([{"loc": ("body", "script_args", *loc), "msg": f"{script.title}: {msg}", "type": kind}
                           for loc, msg, kind in args_error_position(script, err, sent)])

    def _check_script(self, request: GenerationRequest, sent: Any) -> None:
        """The script's own check (unknown sampler or checkpoint on an axis...), before the job is queued."""
        from modules.extensions.selectable import ScriptArgsError

        call = request.script
        if call is None:
            return
        script = self.ctx.extensions.selectable.get(call.name, request.mode is not Mode.TXT2IMG)
        try:
            script.check(request, call.args, self.script_services())
        except ScriptArgsError as err:
            raise self._script_args_error(script, err, sent) from None

    def script_services(self):
        from modules.extensions.selectable import ScriptServices

        return ScriptServices(registry=self.ctx.registry, postprocess=self.ctx.postprocess,
                              settings=self.ctx.settings, paths=self.ctx.paths, styles=self.styles)

    def _extension_args(self, body: schemas._GenerationBase, is_img2img: bool,
                        warnings: list[str]) -> dict[str, Any]:
        """alwayson_scripts (and the infotext's extension fields) -> GenerationRequest.extensions."""
        text = _clean_name(body.infotext)
        params = infotext_mod.parse_infotext(text).params if text is not None else None
        return extensions_api.request_extensions(self.ctx.extensions.extension_set, body.alwayson_scripts,
                                                 is_img2img, params, warnings)

    def extension_items(self) -> list[schemas.ExtensionItem]:
        return extensions_api.extension_items(self.ctx.extensions.catalog)

    def script_infos(self) -> list[schemas.ScriptInfo]:
        return extensions_api.script_infos(self.ctx.extensions)

    def _known_styles(self, names: Iterable[str], warnings: list[str]) -> list[str]:
        """As A1111: a style that does not exist is skipped (bots send ["None"]), with a warning."""
        known, unknown = self.styles.split_known(str(n) for n in names)
        if unknown:
            listed = ", ".join(repr(k) for k in self.styles.names()) or "none are defined in styles.csv"
            warnings.append(f"unknown style(s) ignored: {', '.join(repr(n) for n in unknown)}; styles: {listed}")
        return known

    def _options_with_overrides(self, overrides: dict[str, Any], warnings: list[str]) -> Options:
        """The settings snapshot with this request's override_settings applied (never stored)."""
        opts = self.ctx.settings.get()
        known = type(opts).known_names()
        for key in overrides:
            if key not in known:
                raise FieldError.single(("override_settings", key),
                                        "unknown setting; see GET /sdapi/v1/options for the names")
        checked = {k: v for k, v in overrides.items() if k not in ("sd_model_checkpoint", "sd_vae")}
        try:
            opts = opts.updated(checked)
        except ValidationError as err:
            raise FieldError([{"loc": ("body", "override_settings", *e["loc"]),
                               "msg": e["msg"].removeprefix("Value error, "), "type": e["type"]}
                              for e in err.errors(include_url=False)]) from None
        ignored = sorted(k for k in overrides if k not in OVERRIDE_TO_REQUEST and k not in OVERRIDES_FOR_ENCODING)
        if ignored:
            warnings.append("override_settings not applied per request: " + ", ".join(ignored))
        return opts

    def _infotext_fields(self, body: schemas._GenerationBase, sent: set[str], overrides: dict[str, Any],
                         is_img2img: bool, warnings: list[str]
                         ) -> tuple[dict[str, Any], dict[str, Any], Optional[dict[str, Any]]]:
        """Fields from `infotext` that the client did not send (A1111's rule). Settings it names
        (clip skip, RNG, model, VAE) go into `overrides` unless the client overrode them."""
        text = _clean_name(body.infotext)
        if text is None:
            return {}, {}, None
        parsed = infotext_mod.request_fields_from_infotext(body.infotext)
        fields: dict[str, Any] = {}
        for key, sources in INFOTEXT_FIELD_SOURCES.items():
            if key in parsed and not sent.intersection(sources):
                fields[key] = parsed[key]  # txt2img: denoising_strength is used with hires only
        for key, option in INFOTEXT_OVERRIDES.items():
            if key not in parsed or option in overrides:
                continue
            value = parsed[key]
            if key == "checkpoint" and not self._is_known("checkpoint", str(value)):
                warnings.append(f"infotext model {value!r} is not available; using the current model")
                continue
            if key == "vae" and not self._is_known("vae", str(value)):
                warnings.append(f"infotext VAE {value!r} is not available; using the VAE setting")
                continue
            overrides[option] = value.value if isinstance(value, RngSource) else value
        inpaint = {k: v for k, v in (parsed.get("inpaint_options") or {}).items()
                   if not sent.intersection(INFOTEXT_INPAINT_SOURCES.get(k, ()))}
        return fields, inpaint, parsed.get("hires") if not is_img2img else None

    def _img2img_fields(self, body: schemas.Img2ImgRequest, sent: set[str], infotext_inpaint: dict[str, Any],
                        warnings: list[str]) -> tuple[Mode, tuple[Image.Image, ...], Optional[InpaintOptions]]:
        if not body.init_images:
            raise FieldError.single("init_images", "img2img needs at least one base64 image in init_images",
                                    "missing")
        limit = self.ctx.settings.get().max_image_pixels  # the stored setting: never a per-request override
        images = tuple(decode_image(data, ("init_images", i), limit).convert("RGB")
                       for i, data in enumerate(body.init_images))
        if _clean_name(body.mask) is None:
            return Mode.IMG2IMG, images, None
        mask = image_ops.mask_channel(decode_image(body.mask, "mask", limit))
        if body.mask_blur is not None:
            blur = body.mask_blur
        else:
            blur = body.mask_blur_x
            if body.mask_blur_y != body.mask_blur_x:
                warnings.append("mask_blur_x and mask_blur_y differ; one blur radius (mask_blur_x) is used")
        options: dict[str, Any] = dict(
            mask=mask, mask_blur=blur, masked_content=INPAINTING_FILL[body.inpainting_fill],
            inpaint_area=InpaintArea.ONLY_MASKED if body.inpaint_full_res else InpaintArea.WHOLE_PICTURE,
            only_masked_padding=body.inpaint_full_res_padding, invert_mask=bool(body.inpainting_mask_invert),
        )
        options.update(infotext_inpaint)
        try:
            inpaint = InpaintOptions(**options)
        except ValidationError as err:
            raise _field_errors(err, prefix=("inpaint",)) from None
        return Mode.INPAINT, images, inpaint

    # ---------------------------------------------------------------- result -> response
    def respond(self, body: schemas._GenerationBase, prepared: Prepared, job: Job, result: GenerationResult,
                model: type[schemas.GenerationResponse]) -> schemas.GenerationResponse:
        images = list(result.images)
        infotexts = list(result.infotexts)
        first_index = result.grids
        if result.grid is not None:  # as A1111: the grid comes first, with the first image's infotext
            images.insert(0, result.grid)
            infotexts.insert(0, infotexts[0] if infotexts else "")
            first_index = 1
        encoded = []
        if prepared.send_images:
            encoded = [encode_image(img, text, prepared.samples_format, prepared.jpeg_quality)
                       for img, text in zip(images, infotexts)]
            # extensions' pictures (ControlNet's detected maps) follow the generations, as in A1111
            encoded += [encode_image(img, "", prepared.samples_format, prepared.jpeg_quality)
                        for img in result.extra_images]
        parameters = body.model_dump()
        if isinstance(body, schemas.Img2ImgRequest) and not body.include_init_images:
            parameters["init_images"] = None
            parameters["mask"] = None
        info = self.info_dict(prepared, job, result, infotexts, first_index)
        return model(images=encoded, parameters=parameters, info=json.dumps(info, default=str))

    @staticmethod
    def info_dict(prepared: Prepared, job: Job, result: GenerationResult, infotexts: list[str],
                  first_index: int) -> dict[str, Any]:
        request = result.request or prepared.request
        first = result.params[0] if result.params else None
        # Typed values from the record the infotexts were rendered from, never parsed back from them
        params = infotext_mod.generation_params(request, first) if first is not None else {}
        started = job.control.snapshot().started_at or job.submitted_at
        return {
            "prompt": result.prompts[0] if result.prompts else request.prompt,
            "all_prompts": list(result.prompts),
            "negative_prompt": result.negative_prompts[0] if result.negative_prompts else request.negative_prompt,
            "all_negative_prompts": list(result.negative_prompts),
            "seed": result.seeds[0] if result.seeds else request.seed,
            "all_seeds": list(result.seeds),
            "subseed": result.subseeds[0] if result.subseeds else request.subseed,
            "all_subseeds": list(result.subseeds),
            "subseed_strength": request.subseed_strength,
            "width": result.width,
            "height": result.height,
            "sampler_name": result.sampler_name,
            "scheduler": result.scheduler,
            "cfg_scale": request.cfg_scale,
            "steps": request.steps,
            "batch_size": request.batch_size,
            "restore_faces": request.restore_faces,
            "face_restoration_model": (first.extra.get(image_finish.FACE_RESTORATION_KEY) if first else None) or None,
            "sd_model_name": (first.model_name or None) if first else None,
            "sd_model_hash": (first.model_hash or None) if first else None,
            "sd_vae_name": (first.vae_name or None) if first else None,
            "sd_vae_hash": (first.vae_hash or None) if first else None,
            "seed_resize_from_w": request.seed_resize_from_w or -1,
            "seed_resize_from_h": request.seed_resize_from_h or -1,
            "denoising_strength": (request.denoising_strength
                                   if request.mode is not Mode.TXT2IMG or request.hires is not None else None),
            "extra_generation_params": {k: v for k, v in params.items() if k not in CORE_INFOTEXT_KEYS},
            "index_of_first_image": first_index,
            "infotexts": infotexts,
            "styles": list(request.styles),
            "job_timestamp": _dt.datetime.fromtimestamp(started).strftime("%Y%m%d%H%M%S"),
            "clip_skip": request.clip_skip,
            "is_using_inpainting_conditioning": False,
            "version": None,
            # beyond A1111
            "task_id": job.id,
            "model_title": result.model_title,
            "interrupted": result.interrupted,
            "warnings": [*prepared.warnings, *result.warnings],
            "timings": asdict(result.timings),
        }

    # =========================================================================== progress & control
    def progress(self, task_id: Optional[str], skip_current_image: bool,
                 user: Optional[str] = None) -> schemas.ProgressResponse:
        """A task's progress, or the caller's own job's (with auth, never another user's)."""
        queue = self.ctx.queue
        position = None
        if task_id:
            job = queue.get(task_id, user)  # UnknownTaskError -> 404, also for another user's task
            position = queue.position(task_id)
        else:
            job = queue.own_job(user)
        pending = queue.pending_count
        if job is None:
            return schemas.ProgressResponse(progress=0.0, eta_relative=0.0, state=schemas.ProgressState(),
                                            textinfo=None, queue_pending=pending)
        if not skip_current_image:
            job.control.watch_previews()
        snap = job.control.snapshot()
        started = snap.started_at or job.submitted_at
        state = schemas.ProgressState(
            skipped=snap.skipped, interrupted=snap.interrupted, job=job.id,
            job_count=snap.batch_count or job.request.batch_count,
            job_timestamp=_dt.datetime.fromtimestamp(started).strftime("%Y%m%d%H%M%S"),
            job_no=snap.batch_index, sampling_step=snap.step, sampling_steps=snap.total_steps or job.request.steps,
        )
        image = None
        if snap.preview is not None and not skip_current_image:
            image = encode_image(snap.preview)
        finished = snap.state.finished
        return schemas.ProgressResponse(
            progress=snap.fraction, eta_relative=0.0 if finished else (snap.eta_s or 0.0), state=state,
            current_image=image, textinfo=snap.textinfo or None, task_id=job.id, status=snap.state.value,
            queue_position=position, queue_pending=pending,
        )

    def interrupt(self, task_id: Optional[str], user: Optional[str] = None) -> dict:
        self.ctx.queue.interrupt(task_id or None, user)
        return {}

    def skip(self, task_id: Optional[str], user: Optional[str] = None) -> dict:
        self.ctx.queue.skip(task_id or None, user)
        return {}

    # =========================================================================== png info
    def png_info(self, body: schemas.PNGInfoRequest) -> schemas.PNGInfoResponse:
        image = decode_image(body.image, "image", self.ctx.settings.get().max_image_pixels)
        text = infotext_mod.read_infotext(image) or ""
        items = {k: v for k, v in image.info.items()
                 if isinstance(k, str) and k != infotext_mod.INFOTEXT_KEY
                 and isinstance(v, (str, int, float, bool, tuple, list))}
        parameters: dict[str, Any] = {}
        if text:
            data = infotext_mod.parse_infotext(text)
            parameters = {"Prompt": data.prompt, "Negative prompt": data.negative_prompt}
            for key, value in data.params.items():
                size = _SIZE_RE.match(value.strip()) if isinstance(value, str) else None
                if size is not None:  # A1111 splits "512x768" into "Size-1" and "Size-2"
                    parameters[f"{key}-1"], parameters[f"{key}-2"] = size.group(1), size.group(2)
                else:
                    parameters[key] = value
        pixels = image.width * image.height
        del image
        if pixels >= heap.TRIM_AFTER_PIXELS:  # glibc would keep the freed pixels in its arenas
            heap.release_free_memory()
        return schemas.PNGInfoResponse(info=text, items=items, parameters=parameters)

    # =========================================================================== models
    @property
    def registry(self):
        return self.ctx.registry

    def _is_known(self, kind: str, name: str) -> bool:
        try:
            self._require_known(kind, name)
        except UnknownModelError:
            return False
        return True

    def valid_names(self, kind: str) -> list[str]:
        """Usable checkpoint titles, or the VAE choices ("Automatic", "None", names), for 404 bodies."""
        if kind == "vae":
            return list(self.registry.vae_choices())
        return list(self.registry.checkpoint_titles())

    def _check_model_names(self, checkpoint: Optional[str], vae: Optional[str]) -> None:
        if checkpoint is not None:
            self._require_known("checkpoint", checkpoint)
        if vae is not None:
            self._require_known("vae", vae)

    def _require_known(self, kind: str, name: str) -> None:
        """UnknownModelError (404 with the valid names) unless the registry knows `name`."""
        if kind == "vae":
            self.registry.find_vae(name)
        else:
            self.registry.find_checkpoint(name)

    def sd_models(self) -> list[schemas.SDModelItem]:
        """Usable checkpoints (files that cannot be loaded are left out: nobody can pick them)."""
        return [schemas.SDModelItem(title=c.title, model_name=c.model_name, hash=c.short_hash, sha256=c.sha256,
                                    filename=str(c.path), config=None)
                for c in self.registry.checkpoints() if c.usable]

    def sd_vaes(self) -> list[schemas.SDVaeItem]:
        return [schemas.SDVaeItem(model_name=v.name, filename=str(v.path))
                for v in self.registry.vaes() if v.usable]

    def refresh_checkpoints(self) -> None:
        self.registry.refresh()

    def refresh_vae(self) -> None:
        self.registry.refresh()  # one scan covers checkpoints and VAEs

    def unload_checkpoint(self) -> dict:
        self.registry.unload()
        return {}

    def reload_checkpoint(self) -> dict:
        self.registry.reload()
        return {}

    # =========================================================================== options & flags
    def get_options(self) -> dict[str, Any]:
        """Every option; `sd_model_checkpoint` is the current model's full title from the first
        request on (clients pick the current model by it), even before it is loaded."""
        options = self.ctx.settings.get().model_dump()
        title = self.registry.current_title()
        if title:
            options["sd_model_checkpoint"] = title
        return options

    def set_options(self, changes: dict[str, Any]) -> None:
        """Validate every change (unknown names 422, unknown model or VAE 404, folders outside the
        data folder 422, a checkpoint that cannot load 422), then store them all."""
        if not isinstance(changes, dict):
            raise FieldError.single((), "expected a JSON object of option names and values")
        current = self.ctx.settings.get()
        unknown = sorted(k for k in changes if k not in type(current).known_names())
        if unknown:
            raise FieldError([{"loc": ("body", k), "msg": "unknown option: neither A1111 nor this app has it",
                               "type": "extra_forbidden"} for k in unknown])
        try:
            current.updated(changes)
        except ValidationError as err:
            raise FieldError([{"loc": ("body", *e["loc"]), "msg": e["msg"].removeprefix("Value error, "),
                               "type": e["type"]} for e in err.errors(include_url=False)]) from None
        escaping = escaping_paths(changes, self.ctx.paths)
        if escaping:
            raise FieldError([{"loc": ("body", k), "msg": why, "type": "path_outside_data_dir"}
                              for k, why in escaping.items()])
        checkpoint = _clean_name(changes.get("sd_model_checkpoint"))
        if checkpoint is not None:
            self._require_known("checkpoint", checkpoint)
        vae = _clean_name(changes.get("sd_vae"))
        if vae is not None:
            self._require_known("vae", vae)
        with self._model_switch(checkpoint):
            self.ctx.settings.update(changes)  # its listeners switch the VAE and apply limits (app_factory)

    @contextlib.contextmanager
    def _model_switch(self, checkpoint: Optional[str]):
        """Load a newly chosen checkpoint before its name is saved: a file that cannot load (a
        refused pickle, truncated or empty) is a 422 with the reason and changes nothing; if saving
        fails afterwards, the previous model becomes the default again."""
        if checkpoint is None or checkpoint == self.registry.current_title():
            yield
            return
        previous = self.registry.current_title()
        try:
            self.registry.select(checkpoint)
        except ModelError as err:
            if isinstance(err, (UnknownModelError, NoModelError)):
                raise
            raise FieldError.single("sd_model_checkpoint", f"cannot use this checkpoint: {err}") from None
        try:
            yield
        except BaseException:
            if previous:
                self.registry.select(previous, load=False)
            raise

    def cmd_flags(self) -> dict[str, Any]:
        flags = dict(vars(self.ctx.args))
        for secret in ("api_auth", "gradio_auth"):  # never hand credentials to whoever asks
            if flags.get(secret):
                flags[secret] = "********"
        # what the attention flags resolved to (SDPA when none is given), as the models load it
        flags["attention"] = self.registry.options.attention
        return flags

    # =========================================================================== lists
    @staticmethod
    def sampler_items() -> list[schemas.SamplerItem]:
        items = []
        for spec in samplers.SAMPLERS:
            schedule = samplers.find_schedule(spec.default_schedule)
            options: dict[str, Any] = {"scheduler": schedule.api_name}
            if spec.note:
                options["note"] = spec.note
            items.append(schemas.SamplerItem(name=spec.name, aliases=list(spec.aliases), options=options))
        return items

    @staticmethod
    def scheduler_items() -> list[schemas.SchedulerItem]:
        return [schemas.SchedulerItem(name=s.api_name, label=s.name, aliases=list(s.aliases) or None,
                                      default_rho=s.default_rho, need_inner_model=s.need_inner_model)
                for s in samplers.SCHEDULES]

    def upscaler_items(self) -> list[schemas.UpscalerItem]:
        return [schemas.UpscalerItem(**asdict(item)) for item in self.ctx.postprocess.upscalers.items()]

    def face_restorer_items(self) -> list[schemas.FaceRestorerItem]:
        """The installed restorers (a file in their folder that is not known to be broken), as
        A1111 lists them: name and the folder (cmd_dir)."""
        post = self.ctx.postprocess
        if post is None:
            return []
        return [schemas.FaceRestorerItem(name=info.name, cmd_dir=info.cmd_dir)
                for info in post.face_restorers.items() if info.usable]

    @staticmethod
    def latent_upscale_modes() -> list[schemas.LatentUpscalerModeItem]:
        return [schemas.LatentUpscalerModeItem(name=name) for name in LATENT_MODES]

    def realesrgan_models(self) -> list[schemas.RealesrganItem]:
        """A1111's six releases (name, path = where it is published, scale), and where the file is or goes."""
        return [schemas.RealesrganItem(**asdict(status))
                for status in self.ctx.postprocess.upscalers.realesrgan_models()]

    def prompt_styles(self) -> list[schemas.PromptStyleItem]:
        out = []
        for name in self.styles.names():
            style = self.styles.get(name)
            out.append(schemas.PromptStyleItem(name=style.name, prompt=style.prompt,
                                               negative_prompt=style.negative_prompt))
        return out

    @staticmethod
    def memory() -> schemas.MemoryResponse:
        return schemas.MemoryResponse(ram=_ram_stats(), cuda=_cuda_stats())


_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


def _ram_stats() -> dict[str, Any]:
    try:
        info = {}
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        total = info["MemTotal"]
        free = info.get("MemAvailable", info.get("MemFree", 0))
        with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {"free": free, "used": rss, "total": total}
    except Exception as err:  # not Linux, or /proc unreadable
        return {"error": f"{err}"}


def _cuda_stats() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available():
            return {"error": "unavailable"}
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()

        def pair(name: str) -> dict[str, int]:
            return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

        return {
            "system": {"free": free, "used": total - free, "total": total},
            "active": pair("active_bytes"), "allocated": pair("allocated_bytes"),
            "reserved": pair("reserved_bytes"), "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    except Exception as err:
        return {"error": f"{err}"}
