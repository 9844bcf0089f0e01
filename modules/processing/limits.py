"""How big a picture a job may ask for on this device: the one home of that rule.

A 2048x2048 txt2img on a CPU holds the single worker for many minutes (and everyone behind it),
so such a job is refused with a clear message before it waits in line. The queue runs this check
on every submit, so the UI and the API refuse alike. Torch-free: the device type is given.
"""

from __future__ import annotations

from typing import Callable

from modules.generation.request import MAX_SIZE, GenerationRequest

SETTING = "max_generation_pixels"
CPU_MAX_PIXELS = 1024 * 1024  # about a minute per image at 20 steps on SD 1.x; 4x that takes many
ACCELERATOR_MAX_PIXELS = MAX_SIZE * MAX_SIZE  # CUDA and the like: the whole allowed range


class SizeLimitError(ValueError):
    """width x height is past the limit; names both fields, the limit and how to change it."""

    fields = ("width", "height")

    def __init__(self, width: int, height: int, limit: int, device: str, from_setting: bool) -> None:
        self.width, self.height, self.limit, self.device = width, height, limit, device
        why = (f"the {SETTING} setting" if from_setting
               else f"the default for this device ({device}); set {SETTING} to change it")
        super().__init__(
            f"width x height {width}x{height} = {width * height} pixels is more than {limit} pixels per image "
            f"(e.g. {_square(limit)}), the limit from {why} (Settings, or POST /sdapi/v1/options "
            f"{{\"{SETTING}\": N}}); lower width/height, or upscale a smaller picture")


def _square(pixels: int) -> str:
    side = int(pixels ** 0.5) // 8 * 8
    return f"{side}x{side}"


def default_max_pixels(device_type: str) -> int:
    return CPU_MAX_PIXELS if device_type == "cpu" else ACCELERATOR_MAX_PIXELS


def max_pixels(setting: int, device_type: str) -> int:
    """The limit in force: the setting, or the device's default when it is 0."""
    return setting if setting > 0 else default_max_pixels(device_type)


def check_size(width: int | None, height: int | None, setting: int, device_type: str) -> None:
    """SizeLimitError when width x height is past the limit. None (the model's native size) passes:
    native sizes (512 to 1024 square) are within every default."""
    if width is None or height is None:
        return
    limit = max_pixels(setting, device_type)
    if width * height > limit:
        raise SizeLimitError(width, height, limit, device_type, from_setting=setting > 0)


def request_size_check(current_setting: Callable[[], int], device_type: str) -> Callable[[GenerationRequest], None]:
    """The queue's admission check: reads the setting as it is at submit time."""

    def check(request: GenerationRequest) -> None:
        check_size(request.width, request.height, current_setting(), device_type)
        if request.hires is not None and request.width and request.height:  # the second pass's size too
            from modules.processing.hires import target_size

            target = target_size(request.width, request.height, request.hires)
            check_size(target.width, target.height, current_setting(), device_type)

    return check


__all__ = ["SizeLimitError", "check_size", "default_max_pixels", "max_pixels", "request_size_check"]
