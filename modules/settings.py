"""User settings (A1111's `config.json` options), read once and replaced whole on change.

`SettingsStore` is handed to whoever needs settings; a job takes one `Options` snapshot when it
starts, so a change made in the Settings tab never alters a job half-way.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from modules.a1111_options import A1111_DEFAULTS, coerce as coerce_a1111
from modules.atomic_write import write_json_atomic
from modules.postprocess.face_restoration.catalog import FaceRestorerName

# A1111's live preview renderers (`show_progress_type`); see Options for what each does here.
PreviewType = Literal["Full", "Approx NN", "Approx cheap", "TAESD"]


class Options(BaseModel):
    """Option names are A1111's, so `/sdapi/v1/options` clients and old config files work.

    The typed fields are the options this app acts on. Every other A1111 1.10 option
    (modules/a1111_options.py) is held too, with A1111's default, so GET lists it and POST takes
    it; those are in `NO_EFFECT_YET`. Names neither A1111 nor this app knows are dropped when a
    settings file is read (old files, extensions' options) and refused by `updated`.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    # model
    sd_model_checkpoint: str = ""
    sd_vae: str = "Automatic"
    sd_checkpoints_limit: int = Field(1, ge=1, le=10)
    CLIP_stop_at_last_layers: int = Field(1, ge=1, le=12)
    randn_source: Literal["GPU", "CPU"] = "GPU"
    # img2img: how much of the picture a 9-channel inpainting model sees under the mask (A1111's
    # "Inpainting conditioning mask strength"; 1 = none of it, 0 = all of it)
    inpainting_mask_weight: float = Field(1.0, ge=0.0, le=1.0)
    # saving
    samples_save: bool = True
    samples_format: Literal["png", "jpg", "jpeg", "webp"] = "png"
    samples_filename_pattern: str = ""
    save_to_dirs: bool = True
    directories_filename_pattern: str = "[date]"
    grid_save: bool = True
    grid_format: Literal["png", "jpg", "jpeg", "webp"] = "png"
    jpeg_quality: int = Field(80, ge=1, le=100)
    outdir_samples: str = ""
    outdir_txt2img_samples: str = ""
    outdir_img2img_samples: str = ""
    outdir_grids: str = ""
    outdir_txt2img_grids: str = ""
    outdir_img2img_grids: str = ""
    outdir_extras_samples: str = ""  # the Extras tab's results; "" = <outputs>/extras-images
    # restore faces / tiling for an API request that leaves `restore_faces` / `tiling` out (A1111 1.6+)
    face_restoration: bool = False
    tiling: bool = False
    # live previews
    live_previews_enable: bool = True
    show_progress_every_n_steps: int = Field(5, ge=0, le=100)
    # how a preview is drawn (A1111's names and default): "Full" = a real VAE decode of the preview
    # latents; "Approx cheap" = a linear latent->RGB map (SD1/SD2 and SDXL latents), no extra model.
    # "Approx NN" and "TAESD" need decoder weights this app does not ship: they draw as "Approx
    # cheap". A small VAE (the embedded model) is always decoded for real: that costs no more.
    show_progress_type: PreviewType = "Approx NN"
    # defaults for new jobs
    default_sampler: str = "DPM++ 2M"
    default_scheduler: str = "Automatic"
    default_steps: int = Field(20, ge=1, le=150)
    default_cfg_scale: float = Field(7.0, ge=0.0, le=30.0)
    # face restoration (restore_faces, Extras): the model, and CodeFormer's fidelity w (0 = strongest)
    face_restoration_model: FaceRestorerName = "CodeFormer"
    code_former_weight: float = Field(0.5, ge=0.0, le=1.0)
    # upscaler tiles, in pixels of the input image (0 = the whole image at once); the overlap is
    # the context each tile gets on every side. ESRGAN_* also serve Real-ESRGAN files; SWIN_* and
    # SCUNET_* are the options of A1111's built-in SwinIR and ScuNET extensions.
    ESRGAN_tile: int = Field(192, ge=0, le=512)
    ESRGAN_tile_overlap: int = Field(8, ge=0, le=48)
    DAT_tile: int = Field(192, ge=0, le=512)
    DAT_tile_overlap: int = Field(8, ge=0, le=48)
    SWIN_tile: int = Field(192, ge=0, le=512)
    SWIN_tile_overlap: int = Field(8, ge=0, le=48)
    SCUNET_tile: int = Field(256, ge=0, le=512)
    SCUNET_tile_overlap: int = Field(8, ge=0, le=64)

    # ---- this app's own settings (not A1111's): limits and performance. Each engineer adding one
    # puts it in this block; they are accepted by POST /options like A1111's keys.
    # One UNet call and one VAE decode per image of a batch (slower): batched kernels round
    # differently, and this keeps image i of a batch pixel-identical to a lone job with its seed.
    batch_per_image: bool = False
    # Decoded pixels allowed per input image (init image, mask, png-info), checked from the file's
    # header before decoding: a tiny PNG can hold a huge canvas. 4096x4096 by default.
    max_image_pixels: int = Field(4096 * 4096, ge=64 * 64, le=16384 * 16384)
    # Jobs allowed to wait in line (the running one not counted); past it a new job is refused
    # (API: 503 with Retry-After) instead of piling up without bound.
    queue_max_pending: int = Field(64, ge=1, le=10_000)
    # Largest width*height generated per image; 0 = the device's default (modules/processing/limits.py:
    # 1024x1024 on a CPU, which takes minutes beyond it; 2048x2048 on CUDA).
    max_generation_pixels: int = Field(0, ge=0, le=2048 * 2048)
    # Black out images the safety checker in models/safety_checker flags (A1111 before 1.0 had
    # this name); with no checker installed, jobs are refused with what to install.
    filter_nsfw: bool = False
    # The invisible DWT-DCT watermark SD's reference scripts add ("StableDiffusionV1").
    add_invisible_watermark: bool = False
    # ControlNet (sd-webui-controlnet's option name): leave the units' detected maps out of the results.
    control_net_no_detectmap: bool = False
    # ControlNet units the txt2img / img2img panels show (read when the UI is built: a restart applies it).
    control_net_unit_count: int = Field(3, ge=1, le=10)
    # VAE memory modes for decoding (modules/processing/vae_modes.py): tiles (peak memory no longer
    # grows with the image; pixels differ slightly at the seams) and one image of a batch at a time.
    vae_tiling: bool = False
    vae_slicing: bool = False

    @classmethod
    def known_names(cls) -> frozenset[str]:
        """Every option name GET lists and POST accepts: this app's fields and A1111's options."""
        return frozenset(cls.model_fields) | frozenset(A1111_DEFAULTS)

    @field_validator("face_restoration_model", mode="before")
    @classmethod
    def _no_restorer_is_the_default(cls, value: Any) -> Any:
        # A1111 stores null when no restorer was ever chosen; its config files must still load
        return "CodeFormer" if value is None else value

    @field_validator("outdir_extras_samples", mode="before")
    @classmethod
    def _extras_folder(cls, value: Any) -> Any:
        # A1111's default, relative to its own root; config files written before this option was
        # typed hold it. Here relative folders are inside outputs/, so it means the default folder.
        return "" if value == A1111_DEFAULTS["outdir_extras_samples"] else value

    @model_validator(mode="before")
    @classmethod
    def _a1111_options(cls, data: Any) -> Any:
        """Keep known names only; check and fill A1111's options that are not typed fields."""
        if not isinstance(data, dict):
            return data
        out = {k: v for k, v in data.items() if k in cls.model_fields}
        errors = []
        for name, default in A1111_DEFAULTS.items():
            if name in cls.model_fields:
                continue
            if name not in data:
                out[name] = list(default) if isinstance(default, list) else default
                continue
            try:
                out[name] = coerce_a1111(name, data[name])
            except ValueError as exc:
                errors.append(InitErrorDetails(type=PydanticCustomError("value_error", "{msg}", {"msg": str(exc)}),
                                               loc=(name,), input=data[name]))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return out

    def updated(self, changes: dict[str, Any]) -> "Options":
        """A new Options with `changes` applied and validated; unknown names are an error."""
        unknown = sorted(set(changes) - type(self).known_names())
        if unknown:
            raise KeyError(f"unknown option(s): {', '.join(unknown)}")
        return type(self).model_validate({**self.model_dump(), **changes})


# A1111 options that are stored and listed but change nothing here yet (shown in the Settings tab).
NO_EFFECT_YET: tuple[str, ...] = tuple(k for k in A1111_DEFAULTS if k not in Options.model_fields)


class SettingsStore:
    """The current Options plus where they persist; writes are atomic (temp file, then rename)."""

    def __init__(self, path: Optional[Path], initial: Optional[Options] = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Options, Options], None]] = []
        self._options = initial if initial is not None else self._read(path)

    @property
    def path(self) -> Optional[Path]:
        return self._path

    def get(self) -> Options:
        return self._options

    def on_change(self, listener: Callable[[Options, Options], None]) -> None:
        """Called with (old, new) after each successful update, e.g. to apply a checkpoint limit."""
        self._listeners.append(listener)

    def update(self, changes: dict[str, Any]) -> Options:
        with self._lock:
            old = self._options
            new = old.updated(changes)
            if self._path is not None:
                write_json_atomic(self._path, new.model_dump())
            self._options = new
        for listener in self._listeners:
            listener(old, new)
        return new

    def adopt(self, options: Options) -> None:
        """Take settings another process saved (a Ray replica adopts the front end's): the
        listeners act on them, nothing is written."""
        with self._lock:
            old, self._options = self._options, options
        for listener in self._listeners:
            listener(old, options)

    @staticmethod
    def _read(path: Optional[Path]) -> Options:
        if path is None or not path.exists():
            return Options()
        try:
            return Options.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
            raise ValueError(f"settings file {path} is not valid: {exc}") from exc

