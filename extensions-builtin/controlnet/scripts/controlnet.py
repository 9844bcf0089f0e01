"""ControlNet, T2I-Adapter and IP-Adapter units (sd-webui-controlnet's API and behaviour) on the
typed hook API.

    args_from_api / _ui / _infotext   units validated: unknown module or model names the field
    process                           infotext `ControlNet N` for the enabled units
    patch_model                       per unit: model (family checked), input image, preprocessor,
                                      detected map; IP-Adapter units patch the UNet (undone on exit)
    unet_step                         per step: each active unit's residuals at the pass's size,
                                      scaled by weight and control mode, summed into the UNet call
    postprocess                       detected maps beside the results (setting control_net_no_detectmap)

A unit with weight 0, or guidance_end 0, never calls its model: the pixels are those of no control.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

import controlnet_ext  # noqa: F401 - the package must be imported while the loader has it on sys.path
from controlnet_ext import residuals, unit_infotext
from controlnet_ext.model_files import EMBEDDED_CONTROLNET_DIR, ControlModelLibrary
from controlnet_ext.units import A1111_RESIZE, DEFAULT_MAX_PIXELS, ControlNetArgs, ControlUnit, ResizeMode
from modules.extensions.hooks import ExtensionEnvironment, JobExtension, UNetStep
from modules.paths import REPO_ROOT

log = logging.getLogger(__name__)

NO_MODULE, NO_MODEL = "none", "None"
DEFAULT_UNIT_COUNT = 3
# sd-webui-controlnet's preprocessor slider defaults when a module shows none (supported_preprocessor.py)
_RESOLUTION_DEFAULT = (512.0, 64.0, 2048.0)  # value, min, max
_THRESHOLD_DEFAULT = (0.5, 0.0, 1.0)


class ControlNetUnitError(ValueError):
    """A unit that cannot run in this job (no input image, an IP-Adapter without its encoder...).
    `request_field`: the API field at fault, so the API answers 422 naming it (modules/api/errors.py)."""

    def __init__(self, message: str, index: Optional[int] = None, field_name: Optional[str] = None):
        super().__init__(message)
        self.request_field = (_unit_field(index, field_name) if index is not None and field_name else None)


def _unit_field(index: int, name: str) -> tuple:
    return ("alwayson_scripts", "controlnet", "args", index, name)


# ---------------------------------------------------------------------------------------------
# one unit, prepared for a job


@dataclass
class PreparedUnit:
    index: int  # position among the request's units (args[i])
    unit: ControlUnit  # with the module's defaults filled in
    control: Any  # model_loading.ControlModel
    image: Any  # np.ndarray: the preprocessor's map (HxWx3 uint8)
    hint: Any  # np.ndarray float (inpaint: -1 where masked) or None
    resize_mode: ResizeMode
    low_vram: bool
    runs: bool = True  # False: weight 0 or guidance_end 0, the model is never called
    ip_run: Any = None  # ip_adapter.IPAdapterRun
    _hints: dict = field(default_factory=dict)  # (h, w, device, dtype) -> [1, C, h, w]
    _adapter_features: dict = field(default_factory=dict)  # (h, w) -> T2I-Adapter features

    @property
    def is_adapter(self) -> bool:
        return getattr(self.control.kind, "value", self.control.kind) == "t2i_adapter"

    @property
    def hint_factor(self) -> int:
        """Hint pixels per latent cell: the model's own downscaling (8 for every real release, where
        it equals the VAE's, so the hint is the picture's size; tiny test models differ)."""
        config = self.control.module.config
        if self.is_adapter:
            return int(getattr(config, "downscale_factor", 8))
        return 2 ** (len(getattr(config, "conditioning_embedding_out_channels", (16, 32, 96, 256))) - 1)

    def fitted(self, height: int, width: int):
        from controlnet_ext.control_image import fitted_hint

        return fitted_hint(self.image, self.hint, self.resize_mode, height, width)

    def hint_at(self, height: int, width: int, device, dtype):
        key = (height, width, str(device), str(dtype))
        if key not in self._hints:
            from controlnet_ext.control_image import hint_tensor

            values, _ = self.fitted(height, width)
            self._hints[key] = hint_tensor(values, device, dtype)
        return self._hints[key]


@dataclass
class JobPlan:
    units: list[PreparedUnit]
    base_size: tuple[int, int]  # (h, w) of the first pass
    hires_size: Optional[tuple[int, int]]


# ---------------------------------------------------------------------------------------------
# the extension


class ControlNetExtension(JobExtension):
    name = "controlnet"
    title = "ControlNet"
    Args = ControlNetArgs
    always_on = True  # sd-webui-controlnet is an AlwaysVisible script: it runs when a unit is enabled

    def __init__(self) -> None:
        self.env: Optional[ExtensionEnvironment] = None
        self.library = ControlModelLibrary([EMBEDDED_CONTROLNET_DIR])
        self.annotator_dir = REPO_ROOT / "models" / "ControlNet-annotators"
        self.clip_vision_dir = REPO_ROOT / "models" / "clip_vision"
        self._preprocessors = None
        self._models = None
        self._clip_encoders = None

    # ---- app level
    def setup(self, env: ExtensionEnvironment) -> None:
        self.env = env
        models_dir = Path(env.paths.models_dir)
        folders = [models_dir / "ControlNet"]
        flag = getattr(env.args, "controlnet_dir", None)
        if flag:
            folders.append(Path(flag))
        folders.append(EMBEDDED_CONTROLNET_DIR)
        self.library = ControlModelLibrary(list(dict.fromkeys(f.resolve() for f in folders)))
        self.library.refresh()
        annotators = getattr(env.args, "controlnet_annotator_models_path", None)
        self.annotator_dir = Path(annotators) if annotators else models_dir / "ControlNet-annotators"
        self.clip_vision_dir = models_dir / "clip_vision"
        self._preprocessors = None

    @property
    def preprocessors(self):
        if self._preprocessors is None:
            from controlnet_ext.preprocessors import Preprocessors

            self._preprocessors = Preprocessors(self.annotator_dir, self.clip_vision_dir)
        return self._preprocessors

    @property
    def models(self):
        if self._models is None:
            from controlnet_ext.model_loading import ControlModelCache

            self._models = ControlModelCache()
        return self._models

    @property
    def clip_encoders(self):
        """The CLIP vision encoders IP-Adapter units loaded (kept for the next job)."""
        if self._clip_encoders is None:
            from controlnet_ext.clip_vision import ClipVisionCache

            self._clip_encoders = ClipVisionCache()
        return self._clip_encoders

    @property
    def unit_count(self) -> int:
        """Units the UI shows (sd-webui-controlnet's control_net_unit_count setting)."""
        if self.env is None:
            return DEFAULT_UNIT_COUNT
        return self.env.settings.get().control_net_unit_count

    def refresh(self) -> None:
        self.library.refresh()

    def app_router(self) -> Any:
        from controlnet_ext.api import build_router

        return build_router(self)

    def ui(self, is_img2img: bool) -> list[Any]:
        from controlnet_ext.ui import build_units

        return build_units(self, is_img2img)

    # ---- arguments
    def _max_pixels(self) -> int:
        try:
            return int(self.env.settings.get().max_image_pixels)
        except AttributeError:
            return DEFAULT_MAX_PIXELS

    def args_from_api(self, value: Any) -> ControlNetArgs:
        """{"args": [unit, ...]}, the list itself, or {"units": [...]} -> ControlNetArgs. Errors are
        located at args[i].<field>, unknown module / model names list the valid ones."""
        if isinstance(value, ControlNetArgs):
            return value
        if value is None:
            return ControlNetArgs()
        if isinstance(value, dict) and set(value) <= {"args"}:
            value = value.get("args") or []
        elif isinstance(value, dict) and set(value) <= {"units"}:
            value = value.get("units") or []
        if not isinstance(value, (list, tuple)):
            raise _validation_error([(("args",), "expected a list of ControlNet units: {\"args\": [unit, ...]}",
                                      value)])
        return self.validate_units(list(value), "args")

    def args_from_ui(self, values: list[Any]) -> ControlNetArgs:
        from controlnet_ext.ui import units_from_values

        return self.validate_units(units_from_values(values), "units")

    def ui_values_from_args(self, args: BaseModel, count: int) -> Optional[list[Any]]:
        from controlnet_ext.ui import values_from_args

        return values_from_args(self, args, count)

    def args_from_infotext(self, params: dict[str, str]) -> Optional[ControlNetArgs]:
        """`ControlNet N` fields -> units (no images). Names are kept as written: the model may not be
        installed here; the job says so by name when it runs."""
        found = unit_infotext.units_from_params(params)
        if found is None:
            return None
        return ControlNetArgs(units=tuple(ControlUnit.model_validate(fields) for fields in found))

    def validate_units(self, items: list[Any], where: str) -> ControlNetArgs:
        units, problems = [], []
        context = {"max_pixels": self._max_pixels()}
        for i, item in enumerate(items):
            try:
                unit = item if isinstance(item, ControlUnit) else ControlUnit.model_validate(item, context=context)
            except ValidationError as err:
                problems += [((where, i, *e["loc"]), e["msg"].removeprefix("Value error, "), e.get("input"))
                             for e in err.errors(include_url=False)]
                continue
            if unit.enabled:
                unit, more = self._checked_names(unit, (where, i))
                problems += more
            units.append(unit)
        if problems:
            raise _validation_error(problems)
        return ControlNetArgs(units=tuple(units))

    def _checked_names(self, unit: ControlUnit, loc: tuple) -> tuple[ControlUnit, list]:
        """The unit with its module's canonical name and its model's title; or the problems."""
        from controlnet_ext.preprocessors import UnknownPreprocessorError

        problems, update = [], {}
        try:
            entry = self.preprocessors.entry(unit.module)
            update["module"] = entry.name
        except UnknownPreprocessorError as err:
            problems.append(((*loc, "module"), str(err), unit.module))
        if unit.has_model:
            found = self.library.find(unit.model)
            if found is None:
                self.library.refresh()  # a file copied in since the last scan
                found = self.library.find(unit.model)
            if found is None:
                valid = ", ".join(["None", *self.library.titles])
                problems.append(((*loc, "model"), f"ControlNet model {unit.model!r} not found; valid models: {valid}",
                                 unit.model))
            else:
                update["model"] = found.title
        return (unit.model_copy(update=update) if update and not problems else unit), problems

    def is_enabled(self, args: BaseModel) -> bool:
        return any(u.enabled for u in getattr(args, "units", ()))

    # ---- job hooks
    def process(self, job, args: ControlNetArgs) -> None:
        enabled = [self.with_defaults(u) for _, u in args.enabled_units]
        try:
            job.extra_params.update(unit_infotext.write(enabled))
        except ValueError as err:  # a value that would break the line: left out, as sd-webui-controlnet does
            log.warning("%s", err)

    def with_defaults(self, unit: ControlUnit) -> ControlUnit:
        """processor_res / threshold_a / threshold_b outside the module's slider range (-1) -> the
        slider's default (sd-webui-controlnet's bound_check_params)."""
        try:
            entry = self.preprocessors.entry(unit.module)
            sliders = (entry.resolution_slider, entry.threshold_a_slider, entry.threshold_b_slider)
        except ValueError:
            sliders = (None, None, None)
        update = {}
        for name, slider, fallback in zip(("processor_res", "threshold_a", "threshold_b"), sliders,
                                          (_RESOLUTION_DEFAULT, _THRESHOLD_DEFAULT, _THRESHOLD_DEFAULT)):
            value_, low, high = (slider.value, slider.min, slider.max) if slider is not None else fallback
            current = getattr(unit, name)
            if current < low or current > high:
                update[name] = int(value_) if name == "processor_res" else float(value_)
        return unit.model_copy(update=update) if update else unit

    def patch_model(self, job, args: ControlNetArgs):
        plan = self._plan(job, args)
        job.extension_data[self.name] = plan
        return self._job_patches(job, plan)

    @contextmanager
    def _job_patches(self, job, plan: JobPlan) -> Iterator[None]:
        with ExitStack() as stack:
            for prepared in plan.units:
                if prepared.ip_run is not None:
                    stack.enter_context(prepared.ip_run.patched(job.model.unet))
            yield

    def unet_step(self, job, batch, step: UNetStep, args: ControlNetArgs) -> None:
        plan: Optional[JobPlan] = job.extension_data.get(self.name)
        if plan is None or not plan.units:
            return
        latent_h, latent_w = int(step.sample.shape[-2]), int(step.sample.shape[-1])
        hires = job.hires is not None
        down = mid = intra = None
        for prepared in plan.units:
            unit = prepared.unit
            in_pass = residuals.runs_in_pass(unit, step.pass_index, hires)
            if prepared.ip_run is not None:  # the patched UNet needs its image_embeds on every call
                extra = prepared.ip_run.step_kwargs(step, on=in_pass)
                step.unet_kwargs.setdefault("added_cond_kwargs", {}).update(extra.get("added_cond_kwargs", {}))
                continue
            if not prepared.runs or not in_pass:
                continue
            if not residuals.active_at(unit, step.index, step.total):
                continue
            height, width = latent_h * prepared.hint_factor, latent_w * prepared.hint_factor
            if prepared.is_adapter:
                features = self._adapter_features(prepared, job, height, width, step)
                scales = residuals.adapter_scales(unit, len(features), step.pass_index)
                features = residuals.scaled(features, scales)
                if unit.control_mode.value == "ControlNet is more important":
                    features = residuals.cond_rows_only(features, step.uncond_rows)
                intra = residuals.add_into(intra, features)
                continue
            down_res, mid_res = self._run_controlnet(prepared, job, step, height, width)
            outputs = [*down_res, mid_res]
            outputs = residuals.scaled(outputs, residuals.controlnet_scales(unit, len(outputs), step.pass_index))
            if unit.control_mode.value == "ControlNet is more important":
                outputs = residuals.cond_rows_only(outputs, step.uncond_rows)
            down = residuals.add_into(down, outputs[:-1])
            mid = outputs[-1] if mid is None else mid + outputs[-1]
        if down is not None:
            step.unet_kwargs["down_block_additional_residuals"] = tuple(down)
            step.unet_kwargs["mid_block_additional_residual"] = mid
        if intra is not None:
            step.unet_kwargs["down_intrablock_additional_residuals"] = list(intra)

    def postprocess(self, job, result, args: ControlNetArgs) -> None:
        plan: Optional[JobPlan] = job.extension_data.pop(self.name, None)
        if plan is None or getattr(job.options, "control_net_no_detectmap", False):
            return
        from PIL import Image

        for prepared in plan.units:
            if not prepared.unit.save_detected_map:
                continue
            sizes = ([plan.hires_size] if plan.hires_size else []) + [plan.base_size]
            for height, width in sizes:
                _, shown = prepared.fitted(height, width)
                result.extra_images.append(Image.fromarray(shown))

    # ---- preparing the units of a job
    def _plan(self, job, args: ControlNetArgs) -> JobPlan:
        base = (job.height, job.width)
        hires_size = (job.hires.target.height, job.hires.target.width) if job.hires is not None else None
        units = []
        for index, unit in args.enabled_units:
            unit = self.with_defaults(unit)
            if not unit.has_model:
                _warn(job, f"ControlNet unit {index} has no model selected; it was not applied")
                continue
            units.append(self._prepare_unit(job, index, unit))
        # a unit that can change nothing (weight 0, guidance_end 0) keeps its detected map but never runs
        return JobPlan(units=units, base_size=base, hires_size=hires_size)

    def _prepare_unit(self, job, index: int, unit: ControlUnit) -> PreparedUnit:
        import numpy as np
        from PIL import Image

        from controlnet_ext.control_image import pixel_perfect_resolution
        from controlnet_ext.model_loading import ControlKind, ControlModelError
        from controlnet_ext.preprocessors import PreprocessInput

        file = self.library.find(unit.model)
        if file is None:
            self.library.refresh()
            file = self.library.find(unit.model)
        if file is None:
            raise ControlNetUnitError(f"ControlNet unit {index}: model {unit.model!r} not found; valid models: "
                                      f"{', '.join(self.library.titles) or 'none installed'}", index, "model")
        try:
            control = self.models.get(file, job.model)  # raises ControlModelMismatchError naming both families
        except ControlModelError as err:  # the API answers 422 naming this unit's model (modules/api/errors.py)
            err.request_field = _unit_field(index, "model")
            raise
        image, mask, resize_mode = self._source(job, index, unit)
        device = job.model.device  # once: the pipeline's execution device walks every module
        resolution = unit.processor_res
        if unit.pixel_perfect:
            resolution = pixel_perfect_resolution(image.shape[0], image.shape[1], job.height, job.width, resize_mode)
            unit = unit.model_copy(update={"processor_res": resolution})
        detected = self.preprocessors.run(unit.module, PreprocessInput(
            image=image, resolution=resolution, threshold_a=unit.threshold_a, threshold_b=unit.threshold_b,
            mask=mask, device=device, seed=job.all_seeds[0] if job.all_seeds else None))
        detected_image = np.asarray(detected.image)
        prepared = PreparedUnit(index=index, unit=unit, control=control, image=detected_image, hint=detected.hint,
                                resize_mode=resize_mode, low_vram=unit.low_vram, runs=residuals.ever_active(unit))
        if not prepared.runs:
            return prepared
        if control.kind is ControlKind.IP_ADAPTER:
            prepared.ip_run = self._ip_adapter_run(job, index, unit, control, Image.fromarray(detected_image))
        else:  # low VRAM: the model rests on the CPU and visits the device for its calls only
            control.module.to("cpu" if unit.low_vram else device)
        return prepared

    def _source(self, job, index: int, unit: ControlUnit):
        """(RGB or RGBA-free input HxWx3, mask HxW or None, resize mode): the unit's own image, else
        the img2img input with the img2img resize mode (and, for inpaint modules, its mask)."""
        import numpy as np

        from controlnet_ext.control_image import image_array, mask_array

        request = job.request
        if unit.image is not None:
            image = image_array(unit.image)
            size = (image.shape[1], image.shape[0])
            mask = mask_array(unit.mask, size) if unit.mask is not None else None
            if unit.is_inpaint:
                return image, (mask if mask is not None else np.zeros(image.shape[:2], np.uint8)), unit.resize_mode
            if mask is not None and not ((mask <= 5).all() or (mask >= 250).all()):
                # a drawn canvas: what was drawn is the input (sd-webui-controlnet's canvas scribble)
                return np.stack([mask] * 3, axis=2), None, unit.resize_mode
            return image, None, unit.resize_mode
        if not request.init_images:
            raise ControlNetUnitError(f"ControlNet unit {index}: no input image; send args[{index}].image "
                                      "(txt2img has no img2img input to use)", index, "image")
        init = request.init_images[0]
        image = image_array(init)
        resize_mode = A1111_RESIZE.get(str(getattr(request.resize_mode, "value", request.resize_mode)).lower(),
                                       ResizeMode.RESIZE)
        mask = None
        if unit.is_inpaint:
            mask = np.zeros(image.shape[:2], np.uint8)
            if request.inpaint is not None:
                mask = _a1111_mask(request.inpaint, (image.shape[1], image.shape[0]))
        return image, mask, resize_mode

    def _ip_adapter_run(self, job, index: int, unit: ControlUnit, control, image):
        from controlnet_ext.clip_vision_files import MODULE_ENCODERS
        from controlnet_ext.ip_adapter import IPAdapterRun, require_clip_vision

        encoder = MODULE_ENCODERS.get(unit.module)
        if encoder is None:
            raise ControlNetUnitError(f"ControlNet unit {index}: {unit.model} is an IP-Adapter; choose an IP-Adapter "
                                      f"module ({', '.join(MODULE_ENCODERS)}), not {unit.module!r}", index, "module")
        path = require_clip_vision(self.clip_vision_dir, encoder)  # names the file to put where
        model = job.model
        return IPAdapterRun(control.module, path, image, unit.weight, unit.guidance_start, unit.guidance_end,
                            model.device, model.dtype, encoders=self.clip_encoders)

    # ---- the models' calls
    def _run_controlnet(self, prepared: PreparedUnit, job, step: UNetStep, height: int, width: int):
        import torch

        net = prepared.control.module
        sample = step.sample[:, :4] if step.sample.shape[1] != net.config.in_channels else step.sample
        rows = sample.shape[0]
        hint = prepared.hint_at(height, width, sample.device, sample.dtype)
        hint = hint.expand(rows, -1, -1, -1)
        if tuple(hint.shape[-2:]) != (height, width):
            raise ControlNetUnitError(f"ControlNet unit {prepared.index}: hint {tuple(hint.shape[-2:])} does not match "
                                      f"the pass's {height}x{width}")
        # the sample's device, not model.device: the pipeline's device is a walk over every module
        with _on_device(net, sample.device, prepared.low_vram):
            down, mid = net(sample, step.timestep, encoder_hidden_states=step.encoder_hidden_states,
                            controlnet_cond=hint, conditioning_scale=1.0, added_cond_kwargs=step.added_cond_kwargs,
                            return_dict=False)
        return [d.to(sample.dtype) for d in down], mid.to(sample.dtype) if isinstance(mid, torch.Tensor) else mid

    def _adapter_features(self, prepared: PreparedUnit, job, height: int, width: int, step: UNetStep) -> list:
        """T2I-Adapter features: they do not depend on the step, so once per size (rows repeated)."""
        key = (height, width)
        if key not in prepared._adapter_features:
            adapter = prepared.control.module
            hint = prepared.hint_at(height, width, step.sample.device, step.sample.dtype)
            if getattr(adapter.config, "in_channels", 3) == 1:
                hint = hint[:, :1]
            with _on_device(adapter, step.sample.device, prepared.low_vram):
                prepared._adapter_features[key] = [f for f in adapter(hint)]
        rows = step.sample.shape[0]
        return [f.repeat(rows, 1, 1, 1) for f in prepared._adapter_features[key]]


# ---------------------------------------------------------------------------------------------
# helpers


@contextmanager
def _on_device(module, device, low_vram: bool) -> Iterator[None]:
    """Low VRAM: the model visits the device for this call only (no-op on a CPU)."""
    if not low_vram:
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        module.to("cpu")


def _a1111_mask(inpaint, size: tuple[int, int]):
    """The img2img inpaint mask as sd-webui-controlnet's prepare_mask makes it: gray, inverted when
    the job inverts it, blurred by mask_blur, at the init image's size. HxW uint8, 255 = masked."""
    import numpy as np
    from PIL import ImageOps

    mask = inpaint.mask.convert("L")
    if inpaint.invert_mask:
        mask = ImageOps.invert(mask)
    if mask.size != size:
        from PIL import Image

        mask = mask.resize(size, Image.Resampling.LANCZOS)
    array = np.asarray(mask)
    if inpaint.mask_blur > 0:
        import cv2

        kernel = 2 * int(2.5 * inpaint.mask_blur + 0.5) + 1
        array = cv2.GaussianBlur(array, (kernel, kernel), inpaint.mask_blur)
    return array


def _warn(job, message: str) -> None:
    if message not in job.result.warnings:
        job.result.warnings.append(message)


def _validation_error(problems: list[tuple[tuple, str, Any]]) -> ValidationError:
    return ValidationError.from_exception_data("ControlNetArgs", [
        InitErrorDetails(type=PydanticCustomError("value_error", "{msg}", {"msg": msg}), loc=loc, input=value)
        for loc, msg, value in problems])


__all__ = ["ControlNetExtension", "ControlNetUnitError", "PreparedUnit", "JobPlan"]
