"""Preprocessor previews ("detected maps") as work for the one JobQueue.

`/controlnet/detect` and the UI's preview button both end here: `check_detect` refuses what can be
refused before anything waits in line (unknown module, no image, a missing mask, absent weights,
a resolution past the limit), then a `DetectTask` runs the preprocessor on the queue's worker, so
a module with weights never shares the device with a generation.

    DetectRequest          the module, images, masks and slider values (-1 = the module's default)
    check_detect(...)      DetectInputError naming the field (the API's 422, the UI's message)
    DetectTask(QueueTask)  result: DetectResult(maps, interrupted)
    run_detect(ext, ...)   check, submit and wait (the UI's path; the API awaits the job itself)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from PIL import Image

from modules.jobs.task import QueueTask

if TYPE_CHECKING:
    from modules.jobs.control import JobControl

    from controlnet_ext.preprocessors import PreprocessorEntry, Preprocessors

DEFAULT_RESOLUTION = 512  # sd-webui-controlnet's processor_res when a module has no resolution slider
MAX_RESOLUTION = 2048  # its resolution slider's maximum
# Modules whose output is an image embedding, not a map: sd-webui-controlnet's detect refuses
# the CLIP-vision ones too ("Module not supported"); they run at generation time only.
EMBEDDING_PREFIXES = ("ip-adapter", "clip_vision", "revision", "t2ia_style")
MASKED_PREFIXES = ("inpaint",)  # modules that need a mask per image (sd-webui-controlnet's requires_mask)


class DetectInputError(ValueError):
    """A detect request that cannot run; `field` is a DetectRequest field name (the API renames it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


@dataclass
class DetectRequest:
    module: str
    images: list[Image.Image]
    masks: list[Optional[Image.Image]] = field(default_factory=list)  # white = masked; [] = none
    processor_res: int = -1  # -1: the module's default
    threshold_a: float = -1
    threshold_b: float = -1


@dataclass
class DetectResult:
    maps: list[Image.Image] = field(default_factory=list)
    interrupted: bool = False


def resolution_of(entry: "PreprocessorEntry", processor_res: float) -> int:
    """The processor resolution a module runs at: sd-webui-controlnet's rule, -1 (any value <= 0)
    takes its resolution slider's default; a module without one runs at 512."""
    if processor_res > 0:
        return int(processor_res)
    slider = entry.resolution_slider
    return int(slider.value) if slider is not None else DEFAULT_RESOLUTION


def needs_mask(name: str) -> bool:
    return name.startswith(MASKED_PREFIXES)


def unavailable_reason(preprocessors: "Preprocessors", entry: "PreprocessorEntry") -> Optional[str]:
    """Why a module cannot run here (its weight files are absent: which, and where they go), or None."""
    if not entry.implemented:
        return f"module {entry.name!r} is listed for compatibility but is not implemented in this app"
    missing = preprocessors.missing(entry.name)
    if not missing:
        return None
    sources = {str(preprocessors.expected_path(w)): w.source for w in entry.weights}
    where = "; ".join(f"put {p.name} at {p}" + (f" (from {sources[str(p)]})" if sources.get(str(p)) else "")
                      for p in missing)
    return f"module {entry.name!r} is not available: its weight files are missing: {where}"


def check_detect(preprocessors: "Preprocessors", request: DetectRequest,
                 max_pixels: int) -> "PreprocessorEntry":
    """The module's entry, or DetectInputError naming the field; nothing is computed here."""
    from controlnet_ext.preprocessors import UnknownPreprocessorError

    try:
        entry = preprocessors.entry(request.module)
    except UnknownPreprocessorError as err:
        raise DetectInputError("module", str(err)) from None
    if entry.name.startswith(EMBEDDING_PREFIXES):
        raise DetectInputError("module", f"module {entry.name!r} computes an image embedding at generation "
                                         "time; it has no map to detect")
    if not request.images:
        raise DetectInputError("images", "no image given: send at least one")
    if needs_mask(entry.name) and (len(request.masks) != len(request.images) or any(m is None for m in request.masks)):
        raise DetectInputError("masks", f"module {entry.name!r} needs one mask per image "
                                        f"({len(request.images)} images, {len(request.masks)} masks)")
    reason = unavailable_reason(preprocessors, entry)
    if reason:
        raise DetectInputError("module", reason)
    resolution = resolution_of(entry, request.processor_res)
    if not 64 <= resolution <= MAX_RESOLUTION:
        raise DetectInputError("processor_res", f"processor_res {resolution} is out of range: "
                                                f"64 to {MAX_RESOLUTION}, or -1 for the module's default")
    for name, slider, value in (("threshold_a", entry.threshold_a_slider, request.threshold_a),
                                ("threshold_b", entry.threshold_b_slider, request.threshold_b)):
        if slider is not None and value > -1 and not slider.min <= value <= slider.max:
            raise DetectInputError(name, f"{name} {value:g} is out of range for {entry.name!r}'s "
                                         f"{slider.name!r}: {slider.min:g} to {slider.max:g}, or -1 for its default")
    for index, image in enumerate(request.images):
        width, height = image.size
        scale = resolution / max(1, min(width, height))
        if width * height * scale * scale > max_pixels:
            raise DetectInputError("processor_res", f"image {index} ({width}x{height}) at processor_res "
                                   f"{resolution} would give a map of more than {max_pixels:,} pixels "
                                   "(setting max_image_pixels); lower processor_res")
    return entry


def rgb_array(image: Image.Image) -> Any:
    """HxWx3 uint8 RGB; transparent pixels over white, as sd-webui-controlnet's HWC3 reads them."""
    import numpy as np

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def mask_array(mask: Image.Image, size: tuple[int, int]) -> Any:
    """HxW uint8, 255 = masked, at the image's size (a mask of another size is stretched to it)."""
    import numpy as np

    mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    return np.asarray(mask, dtype=np.uint8)


class DetectTask(QueueTask):
    """Runs one module over the request's images on the queue's worker; stops between images when
    interrupted (the maps done so far are kept)."""

    def __init__(self, preprocessors: "Preprocessors", request: DetectRequest, device: Any = None) -> None:
        self.preprocessors = preprocessors
        self.request = request
        self.device = device
        self.batch_count = max(1, len(request.images))

    def run(self, control: "JobControl") -> DetectResult:
        from controlnet_ext.preprocessors import PreprocessInput

        request = self.request
        entry = self.preprocessors.entry(request.module)
        control.start(batch_count=len(request.images), total_steps=1)
        result = DetectResult()
        for index, image in enumerate(request.images):
            if control.interrupted:
                result.interrupted = True
                break
            control.report_step(index, 0, 1)
            mask = request.masks[index] if index < len(request.masks) else None
            inp = PreprocessInput(image=rgb_array(image), resolution=int(request.processor_res),  # -1: its default
                                  threshold_a=request.threshold_a, threshold_b=request.threshold_b,
                                  mask=mask_array(mask, image.size) if mask is not None else None,
                                  device=self.device if entry.weights else None)
            detected = self.preprocessors.run(entry.name, inp)
            result.maps.append(Image.fromarray(detected.image))
            control.report_step(index, 1, 1)
        return result

    def without_pixels(self) -> "DetectTask":
        return DetectTask(self.preprocessors, DetectRequest(self.request.module, []), self.device)


def make_task(ext: Any, request: DetectRequest) -> DetectTask:
    """Checked and ready for the queue (DetectInputError otherwise)."""
    context = ext.env.app.context
    max_pixels = context.settings.get().max_image_pixels
    entry = check_detect(ext.preprocessors, request, max_pixels)
    device = context.postprocess.device if entry.weights and context.postprocess is not None else None
    return DetectTask(ext.preprocessors, request, device)


def run_detect(ext: Any, request: DetectRequest, owner: Optional[str] = None) -> list[Image.Image]:
    """The UI's preview: check, run on the one queue, wait. Raises DetectInputError for a request
    that cannot run, and whatever the preprocessor raised."""
    task = make_task(ext, request)
    return ext.env.app.context.queue.submit(task, owner=owner).result().maps


__all__ = ["DetectRequest", "DetectResult", "DetectTask", "DetectInputError", "check_detect", "resolution_of",
           "unavailable_reason",
           "make_task", "run_detect"]
