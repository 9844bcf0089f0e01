"""Hires fix (txt2img): what the second pass runs at, decided once per job from the request.

A1111's rules, kept in one place so the engine, the API and the infotext agree:

* target size: `scale` times the first pass, or `resize_x` x `resize_y`; one side 0 keeps the
  first pass's aspect ratio; both given with another aspect ratio: upscale until the picture
  covers the box, then crop the overflow off the latents, centred (A1111's "truncate");
* steps: the second pass runs exactly `second_pass_steps` (0 = the first pass's steps) steps of a
  schedule `steps / denoising_strength` long, as A1111's img2img does when it is given steps;
* sampler and schedule: None = the first pass's; prompts: "" = the first pass's; CFG: None = the
  first pass's;
* infotext: A1111's "Hires ..." keys, each written only where A1111 writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from modules.generation.request import MAX_SIZE, GenerationRequest, HiresOptions
from modules.processing import samplers
from modules.processing.latent_upscale import is_latent_mode

LATENT_FACTOR = 8  # pixels per latent cell (A1111's opt_f): target sizes are multiples of it
# The upscaled picture before cropping may pass MAX_SIZE (a tall first pass into a square box);
# past this it would only exhaust memory.
MAX_UPSCALE_SIDE = 2 * MAX_SIZE
# A1111's UI values meaning "the first pass's"
SAME_SAMPLER = "Use same sampler"
SAME_SCHEDULER = "Use same scheduler"


class HiresSizeError(ValueError):
    """The hires target is past the allowed size; names the fields that set it."""

    fields = ("hr_scale", "hr_resize_x", "hr_resize_y")


@dataclass(frozen=True)
class HiresTarget:
    """Where the first pass goes: upscaled to `upscale_*` (multiples of 8), then `crop_*` latent
    cells cut off (A1111's truncate_x/y: half before, the rest after) to give `width` x `height`."""

    upscale_width: int
    upscale_height: int
    crop_x: int = 0
    crop_y: int = 0

    @property
    def width(self) -> int:
        return self.upscale_width - self.crop_x * LATENT_FACTOR

    @property
    def height(self) -> int:
        return self.upscale_height - self.crop_y * LATENT_FACTOR

    @property
    def latent_size(self) -> tuple[int, int]:
        """(height, width) of the upscaled latents, before the crop."""
        return self.upscale_height // LATENT_FACTOR, self.upscale_width // LATENT_FACTOR

    def crop_box(self) -> tuple[int, int, int, int]:
        """The crop in pixels as PIL's (left, top, right, bottom) on the upscaled picture."""
        left, top = self.crop_x // 2 * LATENT_FACTOR, self.crop_y // 2 * LATENT_FACTOR
        return left, top, left + self.width, top + self.height


def _down8(value: int) -> int:
    return value // LATENT_FACTOR * LATENT_FACTOR


def target_size(width: int, height: int, options: HiresOptions) -> HiresTarget:
    """A1111's calculate_target_resolution on a `width` x `height` first pass."""
    rx, ry = options.resize_x, options.resize_y
    crop_x = crop_y = 0
    if rx == 0 and ry == 0:
        up_w, up_h = int(width * options.scale), int(height * options.scale)
    elif ry == 0:
        up_w, up_h = rx, rx * height // width
    elif rx == 0:
        up_w, up_h = ry * width // height, ry
    else:
        if width / height < rx / ry:  # the box is wider: fit the width, crop top and bottom
            up_w, up_h = rx, rx * height // width
        else:
            up_w, up_h = ry * width // height, ry
        crop_x, crop_y = (up_w - rx) // LATENT_FACTOR, (up_h - ry) // LATENT_FACTOR
    target = HiresTarget(_down8(up_w), _down8(up_h), crop_x, crop_y)
    how = f"scale {options.scale:g}" if rx == 0 and ry == 0 else f"resize {rx}x{ry}"
    if target.width < LATENT_FACTOR or target.height < LATENT_FACTOR:
        raise HiresSizeError(f"hires fix ({how}) of a {width}x{height} picture gives "
                             f"{target.width}x{target.height}: too small")
    if max(target.width, target.height) > MAX_SIZE or max(target.upscale_width, target.upscale_height) > MAX_UPSCALE_SIDE:
        raise HiresSizeError(f"hires fix ({how}) of a {width}x{height} picture gives {target.width}x{target.height}"
                             f" (upscaled to {target.upscale_width}x{target.upscale_height} before cropping); "
                             f"the most is {MAX_SIZE} per side, {MAX_UPSCALE_SIDE} before cropping")
    return target


def crop_latents(latents, target: HiresTarget):
    """[B, C, h, w] upscaled latents -> the target's crop (A1111's truncate: centred, the odd cell
    off the end)."""
    h, w = latents.shape[-2], latents.shape[-1]
    top, left = target.crop_y // 2, target.crop_x // 2
    return latents[..., top:h - (target.crop_y + 1) // 2, left:w - (target.crop_x + 1) // 2]


def schedule_steps(hires_steps: int, first_steps: int, strength: float) -> tuple[int, int]:
    """(schedule length, steps run) of the second pass: A1111 runs the requested steps of a
    schedule stretched by 1/strength. Strength 0 runs nothing."""
    requested = hires_steps or first_steps
    if strength <= 0:
        return 0, 0
    return int(requested / min(strength, 0.999)), requested


def is_same(name: Optional[str], same: str) -> bool:
    """None, "" and A1111's "Use same ..." all mean the first pass's choice."""
    return name is None or name.strip() in ("", same)


def resolve_sampler(options: HiresOptions, first_sampler: str, first_scheduler: str) -> samplers.SamplerChoice:
    """The second pass's sampler and schedule; unknown names raise UnknownSamplerError."""
    sampler = first_sampler if is_same(options.sampler_name, SAME_SAMPLER) else options.sampler_name
    schedule = first_scheduler if is_same(options.scheduler, SAME_SCHEDULER) else options.scheduler
    return samplers.resolve(sampler, schedule)


@dataclass(frozen=True)
class HiresPlan:
    """Everything the second pass runs with, resolved from the request and the first pass."""

    options: HiresOptions
    target: HiresTarget
    sampler: samplers.SamplerChoice
    steps: int  # schedule length
    run_steps: int  # steps actually run (what progress counts)
    strength: float
    cfg_scale: float
    prompt: str  # "" = the first pass's prompts
    negative_prompt: str

    @property
    def is_latent(self) -> bool:
        return is_latent_mode(self.options.upscaler)

    def infotext(self, request: GenerationRequest, first: samplers.SamplerChoice) -> dict[str, Any]:
        """A1111's "Hires ..." infotext fields in A1111's order ("Denoising strength" is a core
        key: modules/infotext.py writes it)."""
        opts = self.options
        params: dict[str, Any] = {}
        if self.sampler.sampler.name != first.sampler.name:
            params["Hires sampler"] = self.sampler.sampler.name
        if self.prompt and self.prompt != request.prompt:
            params["Hires prompt"] = self.prompt
        if self.negative_prompt and self.negative_prompt != request.negative_prompt:
            params["Hires negative prompt"] = self.negative_prompt
        if self.cfg_scale != request.cfg_scale:  # Forge's key; A1111 has no hires CFG
            params["Hires CFG Scale"] = self.cfg_scale
        if self.sampler.schedule.name != first.schedule.name:
            params["Hires schedule type"] = self.sampler.schedule.name
        if opts.resize_x == 0 and opts.resize_y == 0:
            params["Hires upscale"] = opts.scale
        else:
            params["Hires resize"] = f"{opts.resize_x}x{opts.resize_y}"
        if opts.second_pass_steps:
            params["Hires steps"] = opts.second_pass_steps
        params["Hires upscaler"] = opts.upscaler
        return params


def plan(request: GenerationRequest, width: int, height: int, first: samplers.SamplerChoice) -> Optional[HiresPlan]:
    """The second pass of `request` after a `width` x `height` first pass; None without hires."""
    options = request.hires
    if options is None:
        return None
    steps, run = schedule_steps(options.second_pass_steps, request.steps, request.denoising_strength)
    return HiresPlan(
        options=options, target=target_size(width, height, options),
        sampler=resolve_sampler(options, request.sampler_name, request.scheduler),
        steps=steps, run_steps=run, strength=request.denoising_strength,
        cfg_scale=request.cfg_scale if options.cfg_scale is None else options.cfg_scale,
        prompt=options.prompt, negative_prompt=options.negative_prompt)


__all__ = ["HiresPlan", "HiresSizeError", "HiresTarget", "LATENT_FACTOR", "crop_latents", "SAME_SAMPLER", "SAME_SCHEDULER",
           "is_same", "plan", "resolve_sampler", "schedule_steps", "target_size"]
