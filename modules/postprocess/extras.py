"""The Extras tab's work: upscale an image (by a factor or to a size), blend in a second upscaler,
restore faces with GFPGAN and/or CodeFormer, and save the result with A1111's postprocessing text.

    request = ExtrasRequest(upscaler_1="Lanczos", upscaling_resize=2)
    result = run_extras(request, [ExtrasInput(image)], postprocessors, save=ExtrasSave(...))

What A1111 1.x does, step by step (scripts/postprocessing_upscale.py, _gfpgan.py, _codeformer.py,
modules/postprocessing.py):
- Upscale: nothing at all when upscaler 1 is "None". By a factor; or to a size: the factor that
  covers the target (the larger of the two ratios), then, with crop, the centre cut to the target.
  Upscaler 2 (not "None", visibility > 0) upscales the same input the same way and is blended over
  upscaler 1's result with PIL's Image.blend.
- GFPGAN, then CodeFormer, each only when its visibility is above 0 (the model is not needed
  otherwise), blended over the input by its visibility.
- `upscale_first` (A1111 before 1.0, and its API field): upscale, then restore faces; otherwise
  faces first. A1111 1.x always upscales first and ignores the field; honouring it keeps the issue's
  "upscale before or after face restoration" choice.
- The text: "Postprocess upscale by: 2, Postprocess upscaler: Lanczos, ...", written to the PNG
  chunks "postprocessing" and "extras"; a "parameters" infotext the input carried is kept.

Torch-free at import: the upscalers and face restorers are reached through `Postprocessors`.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from modules import outputs
from modules.infotext import format_number, quote, read_infotext
from modules.jobs.control import JobControl
from modules.jobs.task import QueueTask
from modules.processing import image_ops

if TYPE_CHECKING:
    from modules.paths import Paths
    from modules.postprocess.services import Postprocessors
    from modules.settings import Options

NO_UPSCALER = "None"
GFPGAN = "GFPGAN"
CODEFORMER = "CodeFormer"
# A result larger than this is refused before any work (about 200 MB per RGB copy; the pipeline
# holds a few). 8192 is also the largest size A1111's "Scale to" sliders offer.
MAX_OUTPUT_PIXELS = 8192 * 8192
# The PNG text chunks A1111 writes the postprocessing text to (it reads "postprocessing" back).
POSTPROCESSING_KEY = "postprocessing"
EXTRAS_KEY = "extras"


class ExtrasRequest(BaseModel):
    """One Extras job's settings, under A1111's API names and with its defaults and ranges."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resize_mode: int = Field(0, ge=0, le=1, description="0: scale by upscaling_resize; 1: scale to "
                                                        "upscaling_resize_w x upscaling_resize_h")
    upscaling_resize: float = Field(2.0, ge=1.0, le=8.0, allow_inf_nan=False, description="Scale factor")
    upscaling_resize_w: int = Field(512, ge=1, description="Target width (resize_mode 1)")
    upscaling_resize_h: int = Field(512, ge=1, description="Target height (resize_mode 1)")
    upscaling_crop: bool = Field(True, description="Crop to the target size (resize_mode 1)")
    upscaler_1: str = Field(NO_UPSCALER, description='"None": no upscaling at all')
    upscaler_2: str = Field(NO_UPSCALER, description="Blended over upscaler 1's result")
    extras_upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    gfpgan_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    codeformer_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    codeformer_weight: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False,
                                     description="0 = maximum effect, 1 = minimum effect")
    upscale_first: bool = Field(False, description="Upscale before restoring faces")

    @property
    def upscales(self) -> bool:
        return self.upscaler_1 != NO_UPSCALER

    @property
    def blends_upscaler_2(self) -> bool:
        return self.upscales and self.upscaler_2 != NO_UPSCALER and self.extras_upscaler_2_visibility > 0


class ExtrasInputError(ValueError):
    """A request field that cannot work (unknown name, result too large, folder not allowed)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---------------------------------------------------------------------------------------------
# sizes


@dataclass(frozen=True)
class UpscalePlan:
    """How one image is resized: upscaled to `size`, then (with crop) cut to `crop`."""

    size: tuple[int, int]
    crop: Optional[tuple[int, int]] = None

    @property
    def final_size(self) -> tuple[int, int]:
        return self.crop or self.size


def upscale_plan(request: ExtrasRequest, width: int, height: int) -> UpscalePlan:
    if request.resize_mode == 1:
        target_w, target_h = request.upscaling_resize_w, request.upscaling_resize_h
        factor = max(target_w / width, target_h / height)  # covers the target on both sides
        size = (max(target_w, round(width * factor)), max(target_h, round(height * factor)))
        return UpscalePlan(size, (target_w, target_h) if request.upscaling_crop else None)
    factor = request.upscaling_resize
    return UpscalePlan((max(1, round(width * factor)), max(1, round(height * factor))))


def check_output_size(request: ExtrasRequest, width: int, height: int) -> None:
    """ExtrasInputError naming the size field when the result would exceed MAX_OUTPUT_PIXELS."""
    if not request.upscales:
        return
    w, h = upscale_plan(request, width, height).size
    if w * h > MAX_OUTPUT_PIXELS:
        field = "upscaling_resize" if request.resize_mode == 0 else "upscaling_resize_w"
        raise ExtrasInputError(field, f"the result of a {width}x{height} image would be {w}x{h}, over the "
                                      f"limit of {MAX_OUTPUT_PIXELS:,} pixels")


def center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's crop: the upscaled image centred on a black width x height canvas."""
    if image.size == (width, height):
        return image
    canvas = Image.new("RGB", (width, height))
    canvas.paste(image, (width // 2 - image.width // 2, height // 2 - image.height // 2))
    return canvas


# ---------------------------------------------------------------------------------------------
# the steps


def _upscale_once(image: Image.Image, plan: UpscalePlan, name: str, postprocess: "Postprocessors") -> Image.Image:
    w, h = plan.size
    out = postprocess.upscalers.upscale_to(image, w, h, name)
    return center_crop(out, *plan.crop) if plan.crop else out


def upscale_step(request: ExtrasRequest, image: Image.Image, info: dict[str, Any],
                 postprocess: "Postprocessors") -> Image.Image:
    if not request.upscales:
        return image
    plan = upscale_plan(request, image.width, image.height)
    if request.resize_mode == 1:
        info["Postprocess upscale to"] = f"{request.upscaling_resize_w}x{request.upscaling_resize_h}"
    else:
        info["Postprocess upscale by"] = request.upscaling_resize
    if plan.crop:
        info["Postprocess crop to"] = f"{plan.crop[0]}x{plan.crop[1]}"
    result = _upscale_once(image, plan, request.upscaler_1, postprocess)
    info["Postprocess upscaler"] = request.upscaler_1
    if request.blends_upscaler_2:
        second = _upscale_once(image, plan, request.upscaler_2, postprocess)
        if second.mode != result.mode:
            second = second.convert(result.mode)
        result = Image.blend(result, second, request.extras_upscaler_2_visibility)
        info["Postprocess upscaler 2"] = request.upscaler_2
    return result


def gfpgan_step(request: ExtrasRequest, image: Image.Image, info: dict[str, Any],
                postprocess: "Postprocessors") -> Image.Image:
    if request.gfpgan_visibility == 0:
        return image
    out = postprocess.face_restorers.restore(image, model=GFPGAN, visibility=request.gfpgan_visibility)
    info["GFPGAN visibility"] = round(request.gfpgan_visibility, 3)
    return out


def codeformer_step(request: ExtrasRequest, image: Image.Image, info: dict[str, Any],
                    postprocess: "Postprocessors") -> Image.Image:
    if request.codeformer_visibility == 0:
        return image
    out = postprocess.face_restorers.restore(image, model=CODEFORMER, codeformer_weight=request.codeformer_weight,
                                             visibility=request.codeformer_visibility)
    info["CodeFormer visibility"] = round(request.codeformer_visibility, 3)
    info["CodeFormer weight"] = round(request.codeformer_weight, 3)
    return out


Step = Callable[[ExtrasRequest, Image.Image, dict, "Postprocessors"], Image.Image]


def steps_in_order(request: ExtrasRequest) -> list[Step]:
    faces: list[Step] = [gfpgan_step, codeformer_step]
    return [upscale_step, *faces] if request.upscale_first else [*faces, upscale_step]


def postprocessing_text(info: dict[str, Any]) -> str:
    """A1111's postprocessing infotext: "key: value" pairs joined by ", " (a key equal to its value
    alone), values quoted as in the parameters line."""
    parts = []
    for key, value in info.items():
        if value is None:
            continue
        text = format_number(value)
        parts.append(key if key == text else f"{key}: {quote(text)}")
    return ", ".join(parts)


def process_image(request: ExtrasRequest, image: Image.Image,
                  postprocess: "Postprocessors") -> tuple[Image.Image, dict[str, Any]]:
    """One image through the steps; returns it with its postprocessing fields (in A1111's order)."""
    info: dict[str, Any] = {}
    image = image.convert("RGB")
    for step in steps_in_order(request):
        image = step(request, image, info, postprocess)
    return image, info


# ---------------------------------------------------------------------------------------------
# inputs, outputs, saving


@dataclass
class ExtrasInput:
    """An image to process, given as pixels or as a file read when its turn comes (a folder of
    thousands is never all in memory). `name`: the source file's name, used for the output's name
    when the use_original_name_batch setting is on (batch and folder jobs); None for one image."""

    image: Optional[Image.Image] = None
    path: Optional[Path] = None
    name: Optional[str] = None

    def load(self, max_pixels: int) -> Image.Image:
        if self.image is not None:
            return self.image
        assert self.path is not None
        return image_ops.open_image(self.path, max_pixels)


@dataclass
class ExtrasOutput:
    image: Optional[Image.Image]  # None when saved but not kept (a folder job not shown)
    info: dict[str, Any]
    infotext: str  # the postprocessing text
    parameters: Optional[str] = None  # the generation infotext the input carried
    path: Optional[str] = None  # where it was saved
    name: Optional[str] = None

    @property
    def chunks(self) -> dict[str, str]:
        """PNG text chunks besides "parameters" (A1111's "postprocessing"; "extras" on files)."""
        return {POSTPROCESSING_KEY: self.infotext} if self.infotext else {}


@dataclass
class ExtrasResult:
    outputs: list[ExtrasOutput] = field(default_factory=list)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def infotext(self) -> str:
        """The last image's postprocessing text (what A1111 shows and returns as html_info)."""
        return self.outputs[-1].infotext if self.outputs else ""

    @property
    def html_info(self) -> str:
        return plaintext_to_html(self.infotext)


def plaintext_to_html(text: str) -> str:
    """A1111's ui_common.plaintext_to_html: lines escaped, joined by <br>, in one <p>."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"


@dataclass(frozen=True)
class ExtrasSave:
    """Where and how results are written (A1111: `outdir_samples or outdir_extras_samples`, no
    subfolders, "00000.png" names, or the input's own name for batches)."""

    settings: outputs.SaveSettings
    base_dir: Path
    use_original_name: bool = True

    @classmethod
    def from_options(cls, options: "Options", outputs_dir: Path, output_dir: Optional[Path] = None) -> "ExtrasSave":
        folder = str(output_dir) if output_dir is not None else (
            options.outdir_samples or options.outdir_extras_samples)
        settings = outputs.SaveSettings(outdir_samples=folder, samples_format=options.samples_format,
                                        save_to_dirs=False, jpeg_quality=options.jpeg_quality,
                                        enable_pnginfo=bool(getattr(options, "enable_pnginfo", True)))
        return cls(settings, Path(outputs_dir), bool(getattr(options, "use_original_name_batch", True)))

    def write(self, out: ExtrasOutput) -> Path:
        stem = Path(out.name).stem if self.use_original_name and out.name else None
        chunks = {**out.chunks, EXTRAS_KEY: out.infotext} if out.infotext else {}
        return outputs.save_image(out.image, kind="extras", seed=0, prompt="", infotext=out.parameters or "",
                                  settings=self.settings, base_dir=self.base_dir, chunks=chunks,
                                  extra_tokens={"seed": None}, forced_name=stem)


def run_extras(request: ExtrasRequest, inputs: Sequence[ExtrasInput], postprocess: "Postprocessors", *,
               save: Optional[ExtrasSave] = None, max_pixels: int = 4096 * 4096,
               control: Optional[JobControl] = None, keep_images: bool = True) -> ExtrasResult:
    """Each input through the steps, in order; saved when `save` is given. A file that cannot be
    read (not an image, too large) is skipped with a warning, as A1111 skips it. Interrupt stops
    before the next image; skip drops the current one. `keep_images` False: results are saved
    but not kept (a folder job whose results are not shown)."""
    control = control or JobControl()
    control.start(batch_count=len(inputs), total_steps=1)
    result = ExtrasResult()
    for index, item in enumerate(inputs):
        if control.interrupted:
            result.interrupted = True
            break
        control.report_step(index, 0, 1)
        try:
            source = item.load(max_pixels)
            check_output_size(request, source.width, source.height)  # files of a folder meet it here
        except Exception as exc:  # unreadable or too large (a file in a folder): skipped, as A1111 skips
            result.warnings.append(f"skipped {item.name or item.path}: {exc}")
            continue
        parameters = read_infotext(source)
        image, info = process_image(request, source, postprocess)
        if control.take_skip():
            continue
        out = ExtrasOutput(image, info, postprocessing_text(info), parameters, name=item.name)
        if save is not None:
            out.path = str(save.write(out))
        if not keep_images:
            out.image = None
        result.outputs.append(out)
        control.report_step(index, 1, 1)
    return result


class ExtrasTask(QueueTask):
    """An Extras job for the one JobQueue (modules/jobs/task.py)."""

    def __init__(self, request: ExtrasRequest, inputs: Sequence[ExtrasInput], postprocess: "Postprocessors",
                 *, save: Optional[ExtrasSave] = None, max_pixels: int = 4096 * 4096, keep_images: bool = True):
        self.request = request
        self.inputs = list(inputs)
        self.postprocess = postprocess
        self.save = save
        self.max_pixels = max_pixels
        self.keep_images = keep_images
        self.batch_count = max(1, len(self.inputs))

    def run(self, control: JobControl) -> ExtrasResult:
        return run_extras(self.request, self.inputs, self.postprocess, save=self.save, max_pixels=self.max_pixels,
                          control=control, keep_images=self.keep_images)

    def without_pixels(self) -> "ExtrasTask":
        if not any(i.image is not None for i in self.inputs):
            return self
        return ExtrasTask(self.request, [], self.postprocess, save=self.save, max_pixels=self.max_pixels)


# ---------------------------------------------------------------------------------------------
# checks before a job is queued (so the UI and the API refuse alike, naming the field)


def check_names(request: ExtrasRequest, postprocess: "Postprocessors") -> None:
    """ExtrasInputError naming the field for an unknown upscaler (the registry's message lists the
    valid names) and for a face restorer with visibility > 0 that is not installed (the message
    says which file to put where)."""
    from modules.postprocess.upscalers import UnknownUpscalerError

    registry = postprocess.upscalers
    for field_name in ("upscaler_1", "upscaler_2"):
        try:
            registry.require(getattr(request, field_name), field_name)
        except UnknownUpscalerError as err:
            raise ExtrasInputError(field_name, str(err).removeprefix(f"{field_name}: ")) from None
    needed = {GFPGAN: ("gfpgan_visibility", request.gfpgan_visibility),
              CODEFORMER: ("codeformer_visibility", request.codeformer_visibility)}
    if not any(visibility > 0 for _, visibility in needed.values()):
        return  # visibility 0: the model is never asked for
    for info in postprocess.face_restorers.items():
        field_name, visibility = needed.get(info.name, ("", 0.0))
        if visibility > 0 and not info.usable:
            raise ExtrasInputError(field_name, info.message or f"{info.name} is not usable")


def list_folder_images(folder: Path) -> list[ExtrasInput]:
    """A1111's listfiles: the folder's files in natural order, hidden ones left out; files that are
    not images are skipped when read (their suffix is not trusted either way)."""
    names = sorted((n for n in os.listdir(folder) if not n.startswith(".")), key=_natural_key)
    return [ExtrasInput(path=folder / n, name=n) for n in names if (folder / n).is_file()]


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def resolve_folder(value: str, field: str, paths: "Paths", confined: bool, must_exist: bool) -> Path:
    """A batch folder typed into the UI: relative to the data folder. `confined` (the UI is reachable
    from other machines): it must stay inside the data folder, as folder settings must
    (modules/settings_paths.py), so nobody on the network reads or writes the server's files."""
    text = (value or "").strip()
    if not text:
        raise ExtrasInputError(field, "no folder given")
    if "\x00" in text:
        raise ExtrasInputError(field, "a folder name cannot hold a NUL character")
    path = Path(os.path.expanduser(text))
    path = (path if path.is_absolute() else paths.data_dir / path).resolve()
    root = paths.data_dir.resolve()
    if confined and not path.is_relative_to(root):
        raise ExtrasInputError(field, f"{text!r} leads to {path}, outside the data folder {root}; the UI is "
                                      "reachable from other machines (--listen, --share or --server-name), so "
                                      "batch folders must stay inside it")
    if must_exist and not path.is_dir():
        raise ExtrasInputError(field, f"{path} is not a folder")
    return path


__all__ = ["ExtrasRequest", "ExtrasInput", "ExtrasOutput", "ExtrasResult", "ExtrasSave", "ExtrasTask",
           "ExtrasInputError", "run_extras", "process_image", "upscale_plan", "check_names", "check_output_size",
           "list_folder_images", "resolve_folder", "postprocessing_text", "MAX_OUTPUT_PIXELS"]
