"""SD upscale (img2img): upscale the init image with any of the app's upscalers, cut it into tiles of
the request's width x height overlapping by "Tile overlap", run img2img on every tile (batch size
tiles per sub-job), and blend the tiles back (selectable_scripts/tiles.py). Batch count = how many
upscaled pictures, each from seed + n.

Size: as A1111's upscalers, floor(side x scale / 8) x 8; the "None" upscaler keeps the image's size.

A1111's positional script_args: "" (its info text), overlap, upscaler_index (an index into the
upscaler list or a name, any case), scale_factor.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Union

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from modules.extensions.selectable import ScriptArgInfo, ScriptArgsError, ScriptRun, ScriptServices, SelectableScript
from modules.generation.request import GenerationRequest, Mode
from modules.generation.result import GenerationResult

from selectable_scripts import tiles
from selectable_scripts.collect import Collector, save_sample, with_fields

BUILTIN = ["None", "Lanczos", "Nearest"]
MAX_TILES = 4096


class SdUpscaleArgs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    overlap: int = Field(64, ge=0, le=256, title="Tile overlap", json_schema_extra={"step": 16})
    upscaler_index: Union[int, str] = Field("None", title="Upscaler")
    scale_factor: float = Field(2.0, ge=1.0, le=8.0, title="Scale Factor", json_schema_extra={"step": 0.05})


def upscaler_names(services: ScriptServices) -> list[str]:
    pp = services.postprocess
    return pp.upscalers.names() if pp is not None else list(BUILTIN)


def resolve_upscaler(value: Union[int, str], services: ScriptServices) -> str:
    names = upscaler_names(services)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if not 0 <= index < len(names):
            raise ScriptArgsError("upscaler_index", f"upscaler index {index} is out of range 0..{len(names) - 1}; "
                                                    f"upscalers: {', '.join(names)}")
        return names[index]
    found = next((n for n in names if n.lower() == str(value).strip().lower()), None)
    if found is None:
        raise ScriptArgsError("upscaler_index", f"unknown upscaler {value!r}; upscalers: {', '.join(names)}")
    return found


def upscaled_size(width: int, height: int, scale: float, upscaler: str) -> tuple[int, int]:
    if upscaler == "None":
        return width, height
    return int(width * scale // 8 * 8), int(height * scale // 8 * 8)


@dataclass(frozen=True)
class Plan:
    upscaler: str
    size: tuple[int, int]  # the upscaled picture
    tile: tuple[int, int]


def build_plan(request: GenerationRequest, args: SdUpscaleArgs, services: ScriptServices) -> Plan:
    upscaler = resolve_upscaler(args.upscaler_index, services)
    init = request.init_images[0]
    size = upscaled_size(init.width, init.height, args.scale_factor, upscaler)
    if min(size) < 64:
        raise ScriptArgsError("scale_factor", f"the upscaled picture would be {size[0]}x{size[1]}; "
                                              "at least 64x64 is needed")
    tile_w, tile_h = request.width or 512, request.height or 512
    # a picture smaller than the tile is one tile of its own size (a multiple of 8)
    tile = (min(tile_w, size[0] // 8 * 8), min(tile_h, size[1] // 8 * 8))
    if args.overlap >= min(tile):
        raise ScriptArgsError("overlap", f"tile overlap {args.overlap} must be smaller than the tile "
                                         f"({tile[0]}x{tile[1]}: the width and height)")
    count = len(tiles.starts(size[0], tile[0], args.overlap)) * len(tiles.starts(size[1], tile[1], args.overlap))
    if count * request.batch_count > MAX_TILES:
        raise ScriptArgsError("scale_factor", f"{count} tiles x batch count {request.batch_count}; at most "
                              f"{MAX_TILES}: use a larger width/height (the tile size) or a smaller scale")
    return Plan(upscaler, size, tile)


def _flatten(image: Image.Image) -> Image.Image:
    """Transparent pixels over white (A1111's img2img_background_color default)."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


class SdUpscale(SelectableScript):
    name = "sd_upscale"
    title = "SD upscale"
    Args = SdUpscaleArgs
    api_fields = ("", "overlap", "upscaler_index", "scale_factor")
    sort_order = 40

    def visible(self, is_img2img: bool) -> bool:
        return is_img2img

    def arg_infos(self, is_img2img: bool) -> list[ScriptArgInfo]:
        infos = super().arg_infos(is_img2img)
        infos[2] = ScriptArgInfo(label="Upscaler", value="None", choices=self._names())
        return infos

    def args_from_ui(self, values: list[Any]) -> BaseModel:
        return self.Args.model_validate(dict(zip(("overlap", "upscaler_index", "scale_factor"), values)))

    def check(self, request: GenerationRequest, args: BaseModel, services: ScriptServices) -> None:
        assert isinstance(args, SdUpscaleArgs)
        build_plan(request, args, services)

    def run(self, run: ScriptRun, args: BaseModel) -> GenerationResult:
        assert isinstance(args, SdUpscaleArgs)
        plan = build_plan(run.request, args, run.services)
        base = run.request
        seed = base.seed if base.seed != -1 else random.randrange(2**32 - 1)
        init = _flatten(base.init_images[0])
        if plan.upscaler == "None":
            picture = init
        else:
            picture = run.services.postprocess.upscalers.upscale_to(init, *plan.size, plan.upscaler)
        grid = tiles.split(picture, plan.tile[0], plan.tile[1], args.overlap)
        sources = [t.image for t in grid.tiles]
        per_batch = base.batch_size
        batches = math.ceil(len(sources) / per_batch)
        run.begin(batches * base.batch_count)
        if base.inpaint is not None:
            run.warnings.append("SD upscale: the inpaint mask is not used; every tile is img2img")
        fields = {"SD upscale overlap": args.overlap, "SD upscale upscaler": plan.upscaler,
                  "SD upscale scale factor": args.scale_factor}
        out = Collector(run)
        for n in range(base.batch_count):
            tile_seed, first, done = seed + n, None, []
            for start in range(0, len(sources), per_batch):
                if run.interrupted:
                    break
                chunk = sources[start:start + per_batch]
                sub = run.derive(mode=Mode.IMG2IMG, inpaint=None, init_images=tuple(chunk), width=plan.tile[0],
                                 height=plan.tile[1], batch_size=len(chunk), batch_count=1, seed=tile_seed,
                                 save_images=False)
                result = run.generate(sub)
                if len(result.images) < len(chunk):
                    break  # skipped or failed: this picture is incomplete
                first = first or (result, sub)
                done += result.images[:len(chunk)]
                tile_seed += len(chunk)
            if len(done) < len(sources):
                break
            for tile, image in zip(grid.tiles, done):
                tile.image = image
            combined = tiles.combine(grid)
            result, sub = first
            params, text = with_fields(result.params[0], sub, fields, seed=seed + n)
            out.note(result)
            out.add(combined, params, text, save_sample(run, combined, params, text, sub), sub)
        return out.finish()

    def ui(self, is_img2img: bool) -> list[Any]:
        import gradio as gr

        pre = "script_img2img_sd_upscale_"
        gr.HTML("<p style=\"margin-bottom:0.75em\">Will upscale the image by the selected scale factor; "
                "use width and height sliders to set tile size</p>")
        overlap = gr.Slider(minimum=0, maximum=256, step=16, label="Tile overlap", value=64, elem_id=f"{pre}overlap")
        scale = gr.Slider(minimum=1.0, maximum=4.0, step=0.05, label="Scale Factor", value=2.0,
                          elem_id=f"{pre}scale_factor")
        upscaler = gr.Radio(label="Upscaler", choices=self._names(), value="None", elem_id=f"{pre}upscaler_index")
        return [overlap, upscaler, scale]

    def setup(self, env: Any) -> None:
        self._env = env  # env.app.context (the app's postprocess services) is set once the app is built

    def _names(self) -> list[str]:
        """The app's upscalers (a model file dropped in shows up), for the UI and /script-info."""
        context = getattr(getattr(getattr(self, "_env", None), "app", None), "context", None)
        return upscaler_names(ScriptServices(postprocess=getattr(context, "postprocess", None)))
