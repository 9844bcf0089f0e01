"""txt2img's hires fix fields (A1111's enable_hr and hr_*) -> `HiresOptions` values, and the checks
that run before the job waits in line (upscaler and sampler names, the target size)."""

from __future__ import annotations

from typing import Any, Optional

from modules.api import schemas
from modules.api.errors import FieldError
from modules.generation.request import HiresOptions
from modules.postprocess.services import Postprocessors
from modules.processing import hires as hires_mod, samplers
from modules.processing.latent_upscale import LATENT_MODES, is_latent_mode
from modules.styles import StyleDatabase

# HiresOptions field -> the txt2img API field (A1111's hr_* names)
HIRES_TO_API = {
    "scale": "hr_scale", "resize_x": "hr_resize_x", "resize_y": "hr_resize_y", "upscaler": "hr_upscaler",
    "second_pass_steps": "hr_second_pass_steps", "sampler_name": "hr_sampler_name", "scheduler": "hr_scheduler",
    "prompt": "hr_prompt", "negative_prompt": "hr_negative_prompt", "cfg_scale": "hr_cfg",
}


def hires_values(body: schemas.Txt2ImgRequest, sent: set[str], from_infotext: Optional[dict[str, Any]],
                 fields: dict[str, Any], warnings: list[str], styles: StyleDatabase) -> Optional[dict[str, Any]]:
    """enable_hr and the hr_* fields -> HiresOptions field values (None: hires off). As A1111,
    an `infotext` with hires keys fills what the client did not send, enable_hr included."""
    enabled = body.enable_hr if "enable_hr" in sent or from_infotext is None else True
    if not enabled:
        if body.firstphase_width or body.firstphase_height:
            warnings.append("firstphase_width/firstphase_height ignored: they only apply with enable_hr")
        return None
    values: dict[str, Any] = {}
    for option, api_name in HIRES_TO_API.items():
        if api_name in sent or from_infotext is None:
            values[option] = getattr(body, api_name)
        else:
            values[option] = from_infotext.get(option)
    if body.firstphase_width or body.firstphase_height:
        _map_firstphase(body, sent, fields, values, warnings)
    if values["upscaler"] is None:
        values["upscaler"] = "Latent"  # A1111's latent_upscale_default_mode
    for key in ("sampler_name", "scheduler"):
        values[key] = schemas.clean_name(values[key])
    if fields.get("styles"):  # as A1111: the styles apply to the hires prompts too
        for key, negative in (("prompt", False), ("negative_prompt", True)):
            if values[key]:
                pos, neg = styles.apply(values[key] if not negative else "",
                                             values[key] if negative else "", fields["styles"])
                values[key] = neg if negative else pos
    return values


def _map_firstphase(body: schemas.Txt2ImgRequest, sent: set[str], fields: dict[str, Any],
                    values: dict[str, Any], warnings: list[str]) -> None:
    """A1111 before 1.0: width/height were the final size and firstphase_* the first pass.
    Kept that meaning: the first pass at firstphase size, resized to width x height."""
    if not (body.firstphase_width and body.firstphase_height):
        raise FieldError.single("firstphase_width", "the old hires fix needs both firstphase_width and "
                                                    "firstphase_height (or send hr_scale / hr_resize_x/y)")
    if {"hr_resize_x", "hr_resize_y"} & sent:
        warnings.append("firstphase_width/height: the first pass runs at that size; hr_resize_x/y set the target")
    else:
        values["resize_x"], values["resize_y"] = fields["width"] or 0, fields["height"] or 0
        warnings.append("firstphase_width/height are A1111's old hires fix fields: the first pass runs at "
                        f"{body.firstphase_width}x{body.firstphase_height} and is upscaled to width x height")
    fields["width"], fields["height"] = body.firstphase_width, body.firstphase_height


def check_hires(options: HiresOptions, fields: dict[str, Any], postprocess: Postprocessors) -> None:
    """Unknown upscaler (422) or hires sampler (404, as sampler_name), and a target past the
    size limit (422), before the job waits in line."""
    if not is_latent_mode(options.upscaler):
        from modules.postprocess.upscalers import UnknownUpscalerError

        try:
            postprocess.upscalers.require(options.upscaler, "hr_upscaler")
        except UnknownUpscalerError as err:  # latent modes are valid here too: list them
            raise FieldError.single("hr_upscaler", f"{err} Latent modes: {', '.join(LATENT_MODES)}",
                                    "unknown_upscaler") from None
    try:
        hires_mod.resolve_sampler(options, fields["sampler_name"], fields["scheduler"])
    except samplers.UnknownSamplerError as err:
        field_name = "hr_sampler_name" if err.kind == "sampler" else "hr_scheduler"
        raise samplers.UnknownSamplerError(field_name, err.name, err.valid) from None
    if fields.get("width") and fields.get("height"):
        try:
            hires_mod.target_size(fields["width"], fields["height"], options)
        except hires_mod.HiresSizeError as err:
            raise FieldError([{"loc": ("body", name), "msg": str(err), "type": "size_limit"}
                              for name in err.fields]) from None
