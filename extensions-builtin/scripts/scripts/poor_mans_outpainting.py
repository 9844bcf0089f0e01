"""Poor man's outpainting (img2img): the canvas grows by "Pixels to expand" on each chosen side
(rounded to the size step, selectable_scripts/outpaint.py), is cut into tiles of the request's
width x height overlapping by the pixels to expand, and every tile that reaches into the new area
is inpainted (the mask: the new area plus twice the mask blur into the picture; masked content as
chosen). The tiles are blended back and the original picture is pasted over its region, so its
pixels never change. One picture per job, as A1111.

A1111's positional script_args: pixels, mask_blur, inpainting_fill (an index into fill / original /
latent noise / latent nothing, or the name), direction (a list of left / right / up / down).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal, Union

from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modules.extensions.selectable import ScriptArgsError, ScriptRun, ScriptServices, SelectableScript
from modules.generation.request import (GenerationRequest, InpaintArea, InpaintOptions, MaskedContent, Mode,
                                       ResizeMode)
from modules.generation.result import GenerationResult

from selectable_scripts import tiles
from selectable_scripts.collect import Collector, save_sample, with_fields
from selectable_scripts.outpaint import DIRECTIONS, Expansion, expansion, keep_original

FILLS = ["fill", "original", "latent noise", "latent nothing"]
MAX_TILES = 1024
MAX_BLUR = 64  # the request's mask blur limit


class PoorMansArgs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pixels: int = Field(128, ge=8, le=256, title="Pixels to expand", json_schema_extra={"step": 8})
    mask_blur: int = Field(4, ge=0, le=64, title="Mask blur")
    inpainting_fill: Union[int, str] = Field("fill", title="Masked content", json_schema_extra={"choices": FILLS})
    direction: list[Literal["left", "right", "up", "down"]] = Field(
        default_factory=lambda: list(DIRECTIONS), title="Outpainting direction",
        json_schema_extra={"choices": list(DIRECTIONS)})

    @field_validator("inpainting_fill")
    @classmethod
    def _fill_name(cls, value: Union[int, str]) -> str:
        if isinstance(value, int) or str(value).isdigit():
            if not 0 <= int(value) < len(FILLS):
                raise ValueError(f"masked content index {value} is out of range 0..{len(FILLS) - 1}")
            return FILLS[int(value)]
        name = str(value).strip().lower()
        if name not in FILLS:
            raise ValueError(f"unknown masked content {value!r}; one of {', '.join(FILLS)}")
        return name


@dataclass(frozen=True)
class Plan:
    exp: Expansion
    tile: tuple[int, int]


def build_plan(request: GenerationRequest, args: PoorMansArgs) -> Plan:
    if not args.direction:
        raise ScriptArgsError("direction", "choose at least one direction (left, right, up, down)")
    init = request.init_images[0]
    exp = expansion(init.width, init.height, args.pixels, args.direction)
    tile = (min(request.width or 512, exp.width), min(request.height or 512, exp.height))
    if args.pixels >= min(tile):
        raise ScriptArgsError("pixels", f"pixels to expand ({args.pixels}) is the tiles' overlap and must be "
                                        f"smaller than the tile ({tile[0]}x{tile[1]}: the width and height)")
    count = (len(tiles.starts(exp.width, tile[0], args.pixels)) * len(tiles.starts(exp.height, tile[1], args.pixels)))
    if count > MAX_TILES:
        raise ScriptArgsError("pixels", f"{count} tiles; at most {MAX_TILES}: use a larger width/height")
    return Plan(exp, tile)


def canvas_and_mask(init: Image.Image, exp: Expansion, blur: int) -> tuple[Image.Image, Image.Image]:
    """The grown canvas (the picture at its place, black around) and the mask (white = paint): the
    new area, reaching `blur` x 2 pixels into the picture on each side that grows."""
    canvas = Image.new("RGB", (exp.width, exp.height))
    canvas.paste(init.convert("RGB"), (exp.left, exp.up))
    mask = Image.new("L", canvas.size, 255)
    ImageDraw.Draw(mask).rectangle((
        exp.left + (blur * 2 if exp.left else 0),
        exp.up + (blur * 2 if exp.up else 0),
        exp.width - exp.right - (blur * 2 if exp.right else 0),
        exp.height - exp.down - (blur * 2 if exp.down else 0),
    ), fill=0)
    return canvas, mask


class PoorMansOutpainting(SelectableScript):
    name = "poor_mans_outpainting"
    title = "Poor man's outpainting"
    Args = PoorMansArgs
    api_fields = ("pixels", "mask_blur", "inpainting_fill", "direction")
    sort_order = 60

    def visible(self, is_img2img: bool) -> bool:
        return is_img2img

    def check(self, request: GenerationRequest, args: BaseModel, services: ScriptServices) -> None:
        assert isinstance(args, PoorMansArgs)
        build_plan(request, args)

    def run(self, run: ScriptRun, args: BaseModel) -> GenerationResult:
        assert isinstance(args, PoorMansArgs)
        plan = build_plan(run.request, args)
        exp, (tile_w, tile_h) = plan.exp, plan.tile
        base = run.request
        seed = base.seed if base.seed != -1 else random.randrange(2**32 - 1)
        init = base.init_images[0]
        canvas, mask = canvas_and_mask(init, exp, args.mask_blur)
        grid = tiles.split(canvas, tile_w, tile_h, args.pixels)
        masks = tiles.split(mask, tile_w, tile_h, args.pixels)
        inside = (lambda t: t.x >= exp.left and t.x + tile_w <= exp.width - exp.right
                  and t.y >= exp.up and t.y + tile_h <= exp.height - exp.down)
        work = [(t, m) for t, m in zip(grid.tiles, masks.tiles) if not inside(t)]
        blur = min(MAX_BLUR, args.mask_blur * 2)  # A1111 blurs the mask by twice the slider
        if blur < args.mask_blur * 2:
            run.warnings.append(f"Poor man's outpainting: mask blur {args.mask_blur} x 2 is above {MAX_BLUR}; "
                                f"{MAX_BLUR} is used")
        run.begin(len(work))
        out = Collector(run)
        first = None
        for i, (tile, tile_mask) in enumerate(work):
            if run.interrupted:
                break
            options = InpaintOptions(mask=tile_mask.image, mask_blur=blur,
                                     masked_content=MaskedContent(args.inpainting_fill),
                                     inpaint_area=InpaintArea.WHOLE_PICTURE)
            sub = run.derive(mode=Mode.INPAINT, init_images=(tile.image,), inpaint=options, width=tile_w,
                             height=tile_h, batch_size=1, batch_count=1, seed=seed + i, save_images=False,
                             resize_mode=ResizeMode.JUST_RESIZE)
            result = run.generate(sub)
            if not result.images:
                continue  # skipped: the tile keeps the canvas as it was (A1111 leaves it black)
            tile.image = result.images[0]
            first = first or (result, sub)
            out.note(result)
        if first is None:
            return out.finish()
        picture = keep_original(tiles.combine(grid), init, exp)
        result, sub = first
        params, text = with_fields(result.params[0], sub, {}, seed=seed, width=exp.width, height=exp.height)
        out.add(picture, params, text, save_sample(run, picture, params, text, sub), sub)
        return out.finish()

    def ui(self, is_img2img: bool) -> list[Any]:
        import gradio as gr

        pre = "script_img2img_poor_mans_outpainting_"
        pixels = gr.Slider(label="Pixels to expand", minimum=8, maximum=256, step=8, value=128, elem_id=f"{pre}pixels")
        blur = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=4, elem_id=f"{pre}mask_blur")
        fill = gr.Radio(label="Masked content", choices=FILLS, value="fill", elem_id=f"{pre}inpainting_fill")
        direction = gr.CheckboxGroup(label="Outpainting direction", choices=list(DIRECTIONS), value=list(DIRECTIONS),
                                     elem_id=f"{pre}direction")
        return [pixels, blur, fill, direction]
