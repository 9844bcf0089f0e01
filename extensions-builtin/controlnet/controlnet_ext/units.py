"""ControlNet units: the Args every part of the extension reads, in sd-webui-controlnet's shapes.

A unit arrives from the API (`alwayson_scripts.controlnet.args[i]`: field names, enum strings or
their ints, old enum names, base64 images, `{"image": ..., "mask": ...}`), from the UI (PIL or
numpy images) or from infotext (no images). All end as one frozen `ControlUnit`.

Field rules are sd-webui-controlnet's (internal_controlnet/args.py): `input_image` / `lowvram` /
`guidance` / `mask_image` are aliases, unknown fields are ignored (its clients send UI-only ones),
weight is 0..2, guidance_start <= guidance_end. Module and model names are checked by the
extension, which knows the installed ones (`ControlNetExtension.args_from_api`).
"""

from __future__ import annotations

import io
from enum import Enum
from typing import Any, Literal, Optional

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

DEFAULT_MAX_PIXELS = 4096 * 4096  # the app's max_image_pixels default; the extension passes the setting


class ControlMode(str, Enum):
    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"

    @property
    def int_value(self) -> int:
        return list(ControlMode).index(self)


class ResizeMode(str, Enum):
    RESIZE = "Just Resize"
    CROP = "Crop and Resize"
    FILL = "Resize and Fill"

    @property
    def int_value(self) -> int:
        return list(ResizeMode).index(self)


HrOption = Literal["Both", "Low res only", "High res only"]

# sd-webui-controlnet's older names of the resize modes (still sent by old clients and infotexts)
_RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": ResizeMode.CROP,
    "Outer Fit (Shrink to Fit)": ResizeMode.FILL,
    "Scale to Fit (Inner Fit)": ResizeMode.CROP,
    "Envelope (Outer Fit)": ResizeMode.FILL,
}
# A1111's img2img resize modes (GenerationRequest.resize_mode values, lower case) -> ours: a unit
# that takes the img2img input takes its resize mode too, as sd-webui-controlnet does
A1111_RESIZE = {"just resize": ResizeMode.RESIZE, "crop and resize": ResizeMode.CROP,
                "resize and fill": ResizeMode.FILL, "just resize (latent upscale)": ResizeMode.RESIZE}
# field aliases sd-webui-controlnet accepts (legacy_field_alias, mask_alias)
_FIELD_ALIASES = {"input_image": "image", "lowvram": "low_vram", "guidance": "guidance_end", "mask_image": "mask"}


def resize_mode_from_value(value: Any) -> ResizeMode:
    """A string (current or old name), an int (0 Just Resize, 1 Crop, 2 Fill; 3 = A1111's latent
    "Just resize"), or a ResizeMode. Unknown ints fall back to Just Resize, as sd-webui-controlnet."""
    if isinstance(value, ResizeMode):
        return value
    if isinstance(value, bool):
        raise ValueError(f"resize_mode must be one of {[m.value for m in ResizeMode]} or 0, 1, 2; got {value!r}")
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        index = int(value)
        if index < 0:
            raise ValueError(f"resize_mode must be 0, 1 or 2; got {value}")
        return list(ResizeMode)[index] if index < len(ResizeMode) else ResizeMode.RESIZE
    if isinstance(value, str):
        text = value.strip()
        if text in _RESIZE_ALIASES:
            return _RESIZE_ALIASES[text]
        for mode in ResizeMode:
            if text.lower() == mode.value.lower():
                return mode
        if text.lower() in A1111_RESIZE:
            return A1111_RESIZE[text.lower()]
        if text.isdigit():
            return resize_mode_from_value(int(text))
    raise ValueError(f"resize_mode must be one of {[m.value for m in ResizeMode]} (or 0, 1, 2); got {value!r}")


def control_mode_from_value(value: Any) -> ControlMode:
    if isinstance(value, ControlMode):
        return value
    if isinstance(value, bool):
        raise ValueError(f"control_mode must be one of {[m.value for m in ControlMode]} or 0, 1, 2; got {value!r}")
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        if 0 <= int(value) < len(ControlMode):
            return list(ControlMode)[int(value)]
    if isinstance(value, str):
        text = value.strip()
        for mode in ControlMode:
            if text.lower() == mode.value.lower():
                return mode
        if text.isdigit():
            return control_mode_from_value(int(text))
    raise ValueError(f"control_mode must be one of {[m.value for m in ControlMode]} (or 0, 1, 2); got {value!r}")


def _max_pixels(info: ValidationInfo) -> int:
    context = info.context or {}
    return int(context.get("max_pixels") or DEFAULT_MAX_PIXELS)


def decode_base64_image(data: str, max_pixels: int) -> Image.Image:
    """Base64 (plain or a data: URL) -> a loaded image; ValueError saying why not (the field is named
    by pydantic's location). Refused from its header when over `max_pixels`."""
    from modules.processing import image_ops

    try:
        raw = image_ops.base64_bytes(data)
    except ValueError as err:
        raise ValueError(f"not a valid base64-encoded image: {err}") from None
    try:
        return image_ops.open_image(io.BytesIO(raw), max_pixels)
    except image_ops.ImageTooLargeError as err:
        raise ValueError(f"{err} (setting max_image_pixels)") from None
    except Image.DecompressionBombError as err:
        raise ValueError(f"image too large ({err}); the limit is {max_pixels:,} pixels (setting max_image_pixels)") \
            from None
    except Exception as err:  # PIL raises many types for non-images and truncated files
        raise ValueError(f"not a valid base64-encoded image: cannot read it ({type(err).__name__}: {err})") from None


def _to_image(value: Any, info: ValidationInfo) -> Optional[Image.Image]:
    if value is None or isinstance(value, Image.Image):
        return value
    if isinstance(value, str):
        return None if not value.strip() else decode_base64_image(value, _max_pixels(info))
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with the app
        np = None
    if np is not None and isinstance(value, np.ndarray):
        array = value
        if array.dtype != np.uint8:
            array = np.clip(array, 0, 255).astype(np.uint8)
        return Image.fromarray(array)
    raise ValueError(f"expected a base64-encoded image, got {type(value).__name__}")


class ControlUnit(BaseModel):
    """One ControlNet unit (sd-webui-controlnet's ControlNetUnit fields and defaults)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="ignore")

    enabled: bool = True
    module: str = "none"
    model: str = "None"
    weight: float = Field(1.0, ge=0.0, le=2.0)
    image: Optional[Image.Image] = None  # the unit's own input; None = the img2img input
    mask: Optional[Image.Image] = None  # white = masked (inpaint_only), or the canvas alpha
    resize_mode: ResizeMode = ResizeMode.CROP
    low_vram: bool = False
    processor_res: int = -1  # -1: the module's default
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = Field(0.0, ge=0.0, le=1.0)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0)
    pixel_perfect: bool = False
    control_mode: ControlMode = ControlMode.BALANCED
    hr_option: HrOption = "Both"
    save_detected_map: bool = True  # API only, as sd-webui-controlnet: False keeps its map out of the result

    @model_validator(mode="before")
    @classmethod
    def _aliases_and_image_forms(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for alias, name in _FIELD_ALIASES.items():
            if alias in data:
                if data.get(name) is not None and data[alias] is not None:
                    raise ValueError(f"send either {alias!r} or {name!r}, not both")
                value = data.pop(alias)
                if data.get(name) is None:
                    data[name] = value
        image = data.get("image")
        # {"image": b64, "mask": b64} (A1111's sketch/inpaint canvas), [image, mask], or a one-item list
        if isinstance(image, (list, tuple)):
            if len(image) == 1:
                image = image[0]
            elif len(image) == 2 and not isinstance(image[0], dict):
                image = {"image": image[0], "mask": image[1]}
            else:
                raise ValueError("image: one image per unit (an image, {'image': ..., 'mask': ...} or [image, mask])")
        if isinstance(image, dict):
            if "image" not in image:
                raise ValueError("image: an object must have an 'image' key (and optionally 'mask')")
            if image.get("mask") is not None and data.get("mask") is None:
                data["mask"] = image["mask"]
            image = image["image"]
        data["image"] = image
        return data

    @field_validator("image", "mask", mode="before")
    @classmethod
    def _decode(cls, value: Any, info: ValidationInfo) -> Optional[Image.Image]:
        return _to_image(value, info)

    @field_validator("resize_mode", mode="before")
    @classmethod
    def _resize_mode(cls, value: Any) -> ResizeMode:
        return resize_mode_from_value(value)

    @field_validator("control_mode", mode="before")
    @classmethod
    def _control_mode(cls, value: Any) -> ControlMode:
        return control_mode_from_value(value)

    @field_validator("hr_option", mode="before")
    @classmethod
    def _hr_option(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2:
            return ("Both", "Low res only", "High res only")[value]
        if isinstance(value, str):
            for option in ("Both", "Low res only", "High res only"):
                if value.strip().lower() == option.lower():
                    return option
        return value

    @field_validator("module", "model", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        return "None" if value is None else value

    @model_validator(mode="after")
    def _guidance_order(self) -> "ControlUnit":
        if self.guidance_start > self.guidance_end:
            raise ValueError(f"guidance_start ({self.guidance_start}) must not be above guidance_end "
                             f"({self.guidance_end})")
        return self

    @property
    def is_inpaint(self) -> bool:
        return "inpaint" in self.module

    @property
    def is_ip_adapter(self) -> bool:
        return self.module.startswith("ip-adapter")

    @property
    def has_model(self) -> bool:
        return self.model.strip().lower() not in ("", "none")


class ControlNetArgs(BaseModel):
    """The extension's Args: the units in order (disabled ones kept: infotext numbers by position)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    units: tuple[ControlUnit, ...] = ()

    @property
    def enabled_units(self) -> list[tuple[int, ControlUnit]]:
        return [(i, u) for i, u in enumerate(self.units) if u.enabled]


__all__ = ["ControlMode", "ResizeMode", "HrOption", "ControlUnit", "ControlNetArgs", "resize_mode_from_value",
           "control_mode_from_value", "decode_base64_image", "A1111_RESIZE", "DEFAULT_MAX_PIXELS"]
