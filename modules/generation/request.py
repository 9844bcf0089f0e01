"""The one typed request every front end (UI, API, scripts) builds.

Field names follow A1111's processing objects where they exist, so the API layer maps its JSON
onto them one to one. Validation lives here so every front end reports the same errors.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Optional

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MIN_SIZE, MAX_SIZE, SIZE_STEP = 64, 2048, 8
MAX_STEPS = 150
# Generous for real prompts (A1111 prompts rarely pass 10k characters); a megabyte prompt took
# half a minute and gigabytes to parse and encode. Checked after styles are expanded.
MAX_PROMPT_CHARS = 32_768


class Mode(str, Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


class ResizeMode(str, Enum):
    JUST_RESIZE = "Just resize"
    CROP_AND_RESIZE = "Crop and resize"
    RESIZE_AND_FILL = "Resize and fill"


class MaskedContent(str, Enum):
    FILL = "fill"
    ORIGINAL = "original"
    LATENT_NOISE = "latent noise"
    LATENT_NOTHING = "latent nothing"


class InpaintArea(str, Enum):
    WHOLE_PICTURE = "Whole picture"
    ONLY_MASKED = "Only masked"


class RngSource(str, Enum):
    """Where initial noise is drawn. CPU makes a seed give the same picture on every device."""

    DEVICE = "GPU"  # A1111's name for "the device the model runs on"
    CPU = "CPU"


class InpaintOptions(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    mask: Image.Image  # white = repaint
    mask_blur: int = Field(4, ge=0, le=64)
    masked_content: MaskedContent = MaskedContent.ORIGINAL
    inpaint_area: InpaintArea = InpaintArea.WHOLE_PICTURE
    only_masked_padding: int = Field(32, ge=0, le=256)
    invert_mask: bool = False


class HiresOptions(BaseModel):
    """txt2img's hires fix (A1111's hr_* fields): a second img2img pass at a larger size. Its
    strength is the request's `denoising_strength`, as in A1111."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scale: float = Field(2.0, ge=1.0, le=8.0)  # used when resize_x and resize_y are both 0
    resize_x: int = Field(0, ge=0, le=MAX_SIZE)  # target width; 0 = from the other side or the scale
    resize_y: int = Field(0, ge=0, le=MAX_SIZE)
    upscaler: str = "Latent"  # a latent mode (modules/processing/latent_upscale.py) or an upscaler name
    second_pass_steps: int = Field(0, ge=0, le=MAX_STEPS)  # 0 = the first pass's steps
    sampler_name: Optional[str] = None  # None = the first pass's sampler ("Use same sampler")
    scheduler: Optional[str] = None
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)  # "" = the first pass's prompt
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    cfg_scale: Optional[float] = Field(None, ge=0.0, le=30.0)  # None = the first pass's CFG scale


class ScriptCall(BaseModel):
    """The selectable script a request runs (A1111's script_name + script_args): the script's key
    and its own Args (modules/extensions/selectable.py). The engine runs the script instead of one
    plain job; the script runs sub-jobs made from the rest of the request."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    name: str
    args: Any = None  # that script's Args instance (or raw JSON for it)


class GenerationRequest(BaseModel):
    """Everything one generation job needs. Immutable: overrides live here, never in globals."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    mode: Mode = Mode.TXT2IMG
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    styles: tuple[str, ...] = ()

    seed: int = Field(-1, ge=-1, le=2**32 - 1)
    subseed: int = Field(-1, ge=-1, le=2**32 - 1)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    seed_resize_from_w: int = Field(0, ge=0, le=MAX_SIZE)  # 0 = off
    seed_resize_from_h: int = Field(0, ge=0, le=MAX_SIZE)
    rng_source: RngSource = RngSource.DEVICE

    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    steps: int = Field(20, ge=1, le=MAX_STEPS)
    # A1111's sampler parameters, its UI ranges; None = the setting (eta_ancestral / eta_ddim) or
    # k-diffusion's default (s_churn 0, s_tmin 0, s_tmax 0 = infinity, s_noise 1)
    eta: Optional[float] = Field(None, ge=0.0, le=1.0)
    s_churn: Optional[float] = Field(None, ge=0.0, le=100.0)
    s_tmin: Optional[float] = Field(None, ge=0.0, le=10.0)
    s_tmax: Optional[float] = Field(None, ge=0.0, le=999.0)
    s_noise: Optional[float] = Field(None, ge=0.0, le=1.1)
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0)
    width: Optional[int] = None  # None = the active model's native size
    height: Optional[int] = None
    batch_count: int = Field(1, ge=1, le=100)
    batch_size: int = Field(1, ge=1, le=8)
    clip_skip: int = Field(1, ge=1, le=12)

    init_images: tuple[Image.Image, ...] = ()
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0)
    resize_mode: ResizeMode = ResizeMode.JUST_RESIZE
    inpaint: Optional[InpaintOptions] = None

    hires: Optional[HiresOptions] = None  # txt2img only; None = off
    restore_faces: bool = False  # with the face_restoration_model setting (A1111's checkbox)
    tiling: bool = False  # seamless: circular padding in the UNet and VAE convolutions

    checkpoint: Optional[str] = None  # title or name; None = the registry's current model
    vae: Optional[str] = None  # "Automatic", "None" or a VAE name; None = the setting
    save_images: bool = True
    save_grid: bool = True
    extensions: dict[str, Any] = Field(default_factory=dict)
    script: Optional[ScriptCall] = None  # the Script dropdown / script_name; None = a plain job

    @field_validator("width", "height")
    @classmethod
    def _size_is_multiple_of_8(cls, value: Optional[int], info) -> Optional[int]:
        if value is None:
            return value
        if not MIN_SIZE <= value <= MAX_SIZE or value % SIZE_STEP:
            raise ValueError(
                f"{info.field_name} must be a multiple of {SIZE_STEP} between {MIN_SIZE} and {MAX_SIZE}, got {value}"
            )
        return value

    @field_validator("prompt", "negative_prompt", mode="before")
    @classmethod
    def _text_is_valid_unicode(cls, value: Any, info) -> Any:
        # JSON can carry a lone surrogate ("\ud800"); it cannot be tokenized, saved or echoed.
        try:
            if isinstance(value, str):
                value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{info.field_name} holds an invalid character (a lone UTF-16 surrogate, "
                             f"{value[err.start]!a}) at position {err.start}; send valid Unicode text") from None
        return value

    @model_validator(mode="after")
    def _images_match_mode(self) -> "GenerationRequest":
        if self.mode is Mode.TXT2IMG and (self.init_images or self.inpaint):
            raise ValueError("txt2img takes no init_images or inpaint mask; use mode img2img or inpaint")
        if self.mode in (Mode.IMG2IMG, Mode.INPAINT) and not self.init_images:
            raise ValueError(f"{self.mode.value} needs at least one image in init_images")
        if self.mode is Mode.INPAINT and self.inpaint is None:
            raise ValueError("inpaint needs inpaint options with a mask")
        if self.hires is not None and self.mode is not Mode.TXT2IMG:
            raise ValueError("hires fix is for txt2img only")
        return self

    @property
    def n_images(self) -> int:
        return self.batch_count * self.batch_size

    @property
    def input_pixels(self) -> int:
        """Pixels of the init images and the mask together (what decoding them cost)."""
        sizes = [img.size for img in self.init_images] + ([self.inpaint.mask.size] if self.inpaint else [])
        return sum(w * h for w, h in sizes)

    def without_pixels(self) -> "GenerationRequest":
        """The record a finished job keeps: every setting, but not the input images, which can be
        tens of megabytes each. Not for running: an inpaint request loses its mask too."""
        if not self.init_images and self.inpaint is None:
            return self
        return self.model_copy(update={"init_images": (), "inpaint": None})
