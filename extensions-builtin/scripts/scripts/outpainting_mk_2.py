"""Outpainting mk2 (img2img): the picture grows one chosen side at a time (left, right, up, down)
by "Pixels to expand" (rounded to the size step, selectable_scripts/outpaint.py). For each side the
new strip is filled with noise matched to the picture (fall-off exponent, colour variation), then
the part of the canvas at that side (at most the request's width, or height, across) is inpainted
with masked content "original" and the mask blur x 4, and put back. At the end the original picture
is pasted over its region, so its pixels never change. Batch size pictures per sub-job, batch
count runs; a grid comes first when there are two or more pictures.

A1111's positional script_args: "" (its info text), pixels, mask_blur, direction (a list of left /
right / up / down), noise_q, color_variation.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from modules.extensions.selectable import ScriptArgsError, ScriptRun, ScriptServices, SelectableScript
from modules.generation.request import (MAX_SIZE, GenerationRequest, InpaintArea, InpaintOptions, MaskedContent,
                                        Mode, ResizeMode)
from modules.generation.result import GenerationResult

from selectable_scripts.collect import Collector, save_sample, with_fields
from selectable_scripts.outpaint import DIRECTIONS, STEP, Expansion, expansion, keep_original, matched_noise

MAX_BLUR = 64  # the request's mask blur limit


class OutpaintingMk2Args(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pixels: int = Field(128, ge=8, le=256, title="Pixels to expand", json_schema_extra={"step": 8})
    mask_blur: int = Field(8, ge=0, le=64, title="Mask blur")
    direction: list[Literal["left", "right", "up", "down"]] = Field(
        default_factory=lambda: list(DIRECTIONS), title="Outpainting direction",
        json_schema_extra={"choices": list(DIRECTIONS)})
    noise_q: float = Field(1.0, ge=0.0, le=4.0, title="Fall-off exponent (lower=higher detail)",
                           json_schema_extra={"step": 0.01})
    color_variation: float = Field(0.05, ge=0.0, le=1.0, title="Color variation", json_schema_extra={"step": 0.01})


def build_plan(request: GenerationRequest, args: OutpaintingMk2Args) -> Expansion:
    if not args.direction:
        raise ScriptArgsError("direction", "choose at least one direction (left, right, up, down)")
    init = request.init_images[0]
    exp = expansion(init.width, init.height, args.pixels, args.direction)
    if max(exp.width, exp.height) > MAX_SIZE:
        raise ScriptArgsError("pixels", f"the canvas would be {exp.width}x{exp.height}; at most {MAX_SIZE} a side")
    return exp


def _up8(value: int) -> int:
    return math.ceil(value / STEP) * STEP


def grow(image: Image.Image, side: str, px: int, blur: int, args: OutpaintingMk2Args,
         ) -> tuple[Image.Image, Image.Image, tuple[int, int]]:
    """The picture with `px` more pixels on `side` (sized up to the step), the new strip noise-filled,
    and its mask (white = paint: the strip and `blur` pixels into the picture); plus the grown size."""
    horizontal = side in ("left", "right")
    res = (image.width + px, image.height) if horizontal else (image.width, image.height + px)
    size = (_up8(res[0]), _up8(res[1]))
    canvas = Image.new("RGB", size)
    canvas.paste(image.convert("RGB"), (px if side == "left" else 0, px if side == "up" else 0))
    mask = Image.new("L", size, 255)
    ImageDraw.Draw(mask).rectangle((
        px + blur if side == "left" else 0,
        px + blur if side == "up" else 0,
        res[0] - px - blur if side == "right" else res[0],
        res[1] - px - blur if side == "down" else res[1],
    ), fill=0)
    noised = matched_noise(np.asarray(canvas, dtype=np.float64) / 255.0, np.asarray(mask, dtype=np.float64) / 255.0,
                           args.noise_q, args.color_variation)
    return Image.fromarray((noised * 255.0).round().astype(np.uint8), "RGB"), mask, res


def region(size: tuple[int, int], side: str, request: GenerationRequest) -> tuple[int, int, int, int]:
    """The part of the canvas sampled: at most the request's width (height) across, at `side`."""
    w, h = size
    if side in ("left", "right"):
        tw = min(request.width or 512, w)
        return (0, 0, tw, h) if side == "left" else (w - tw, 0, w, h)
    th = min(request.height or 512, h)
    return (0, 0, w, th) if side == "up" else (0, h - th, w, h)


class OutpaintingMk2(SelectableScript):
    name = "outpainting_mk_2"
    title = "Outpainting mk2"
    Args = OutpaintingMk2Args
    api_fields = ("", "pixels", "mask_blur", "direction", "noise_q", "color_variation")
    sort_order = 50

    def visible(self, is_img2img: bool) -> bool:
        return is_img2img

    def args_from_ui(self, values: list[Any]) -> BaseModel:
        return self.Args.model_validate(dict(zip(self.api_fields[1:], values)))

    def check(self, request: GenerationRequest, args: BaseModel, services: ScriptServices) -> None:
        assert isinstance(args, OutpaintingMk2Args)
        build_plan(request, args)

    def run(self, run: ScriptRun, args: BaseModel) -> GenerationResult:
        assert isinstance(args, OutpaintingMk2Args)
        exp = build_plan(run.request, args)
        base = run.request
        seed = base.seed if base.seed != -1 else random.randrange(2**32 - 1)
        blur = min(MAX_BLUR, args.mask_blur * 4)  # A1111 blurs the mask by four times the slider
        if blur < args.mask_blur * 4:
            run.warnings.append(f"Outpainting mk2: mask blur {args.mask_blur} x 4 is above {MAX_BLUR}; "
                                f"{MAX_BLUR} is used")
        run.begin(base.batch_count * len(exp.sides))
        out = Collector(run)
        shown = []
        init = base.init_images[0]
        for n in range(base.batch_count):
            pictures, first = [init] * base.batch_size, None
            for side, px in exp.sides:
                if run.interrupted:
                    break
                grown = [grow(p, side, px, args.mask_blur, args) for p in pictures]
                box = region(grown[0][0].size, side, base)
                options = InpaintOptions(mask=grown[0][1].crop(box), mask_blur=blur,
                                         masked_content=MaskedContent.ORIGINAL, inpaint_area=InpaintArea.WHOLE_PICTURE)
                sub = run.derive(mode=Mode.INPAINT, init_images=tuple(g[0].crop(box) for g in grown), inpaint=options,
                                 width=box[2] - box[0], height=box[3] - box[1], batch_size=base.batch_size,
                                 batch_count=1, seed=seed + n * base.batch_size, save_images=False,
                                 resize_mode=ResizeMode.JUST_RESIZE)
                result = run.generate(sub)
                if len(result.images) < len(grown):
                    pictures = []
                    break  # skipped or failed: this run has no picture
                first = first or (result, sub)
                out.note(result)
                pictures = []
                for (canvas, _mask, res), painted in zip(grown, result.images):
                    canvas.paste(painted.convert("RGB"), box[:2])
                    pictures.append(canvas.crop((0, 0, *res)))
            if first is None or not pictures or run.interrupted:
                break
            result, sub = first
            for j, picture in enumerate(pictures):
                picture = keep_original(picture, init, exp)
                params, text = with_fields(result.params[j], sub, {}, width=exp.width, height=exp.height)
                shown.append((picture, params, text, save_sample(run, picture, params, text, sub), sub))
        out.add_with_grid(shown)
        return out.finish()

    def ui(self, is_img2img: bool) -> list[Any]:
        import gradio as gr

        pre = "script_img2img_outpainting_mk_2_"
        gr.HTML("<p style=\"margin-bottom:0.75em\">Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, "
                "Denoising strength: 0.8</p>")
        pixels = gr.Slider(label="Pixels to expand", minimum=8, maximum=256, step=8, value=128, elem_id=f"{pre}pixels")
        blur = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=8, elem_id=f"{pre}mask_blur")
        direction = gr.CheckboxGroup(label="Outpainting direction", choices=list(DIRECTIONS), value=list(DIRECTIONS),
                                     elem_id=f"{pre}direction")
        noise_q = gr.Slider(label="Fall-off exponent (lower=higher detail)", minimum=0.0, maximum=4.0, step=0.01,
                            value=1.0, elem_id=f"{pre}noise_q")
        variation = gr.Slider(label="Color variation", minimum=0.0, maximum=1.0, step=0.01, value=0.05,
                              elem_id=f"{pre}color_variation")
        return [pixels, blur, direction, noise_q, variation]
