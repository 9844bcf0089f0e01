"""Prompt matrix: `a photo | red | at night` -> every on/off combination of the parts after the
first, one image each (same seed unless "different seeds"), in a grid whose labels show which parts
are on (off ones grey, struck through): A1111's layout, the first half of the parts across, the
rest down.

A1111's positional script_args: put_at_start, different_seeds, prompt_type ("positive" /
"negative"), variations_delimiter ("comma" / "space"), margin_size.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modules import grids
from modules.extensions.selectable import ScriptArgsError, ScriptRun, ScriptServices, SelectableScript
from modules.generation.request import GenerationRequest
from modules.generation.result import GenerationResult

from selectable_scripts.plot_result import PlotOutput, assemble, blank_like, cell_from, grid_params

MAX_PARTS = 10  # 2**10 = 1024 images


class PromptMatrixArgs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    put_at_start: bool = Field(False, title="Put variable parts at start of prompt")
    different_seeds: bool = Field(False, title="Use different seed for each picture")
    prompt_type: Literal["positive", "negative"] = Field(
        "positive", title="Select prompt", json_schema_extra={"choices": ["positive", "negative"]})
    variations_delimiter: Literal["comma", "space"] = Field(
        "comma", title="Select joining char", json_schema_extra={"choices": ["comma", "space"]})
    margin_size: int = Field(0, ge=0, le=500, title="Grid margins (px)", json_schema_extra={"step": 2})


def matrix_prompts(text: str, args: PromptMatrixArgs) -> tuple[list[str], list[str]]:
    """(the prompt of each combination, in A1111's order; the variable parts)."""
    parts = text.split("|")
    variable = [p.strip().strip(",") for p in parts[1:]]
    delimiter = ", " if args.variations_delimiter == "comma" else " "
    prompts = []
    for combination in range(2 ** len(variable)):
        chosen = [t for n, t in enumerate(variable) if combination & (1 << n)]
        base = parts[0].strip()  # A1111 keeps the space before the first "|"; the prompt reads better without
        ordered = chosen + [base] if args.put_at_start else [base] + chosen
        prompts.append(delimiter.join(ordered))
    return prompts, variable


class PromptMatrix(SelectableScript):
    name = "prompt_matrix"
    title = "Prompt matrix"
    Args = PromptMatrixArgs
    api_fields = ("put_at_start", "different_seeds", "prompt_type", "variations_delimiter", "margin_size")
    sort_order = 10

    def _text(self, request: GenerationRequest, args: PromptMatrixArgs) -> str:
        return request.prompt if args.prompt_type == "positive" else request.negative_prompt

    def check(self, request: GenerationRequest, args: BaseModel, services: ScriptServices) -> None:
        assert isinstance(args, PromptMatrixArgs)
        text = self._text(request, args)
        count = text.count("|")
        target = "prompt" if args.prompt_type == "positive" else "negative prompt"
        if count == 0:
            raise ScriptArgsError("prompt_type", f"the {target} has no '|': write parts as `base | part 1 | part 2`")
        if count > MAX_PARTS:
            raise ScriptArgsError("prompt_type", f"the {target} has {count} variable parts "
                                                 f"({2 ** count} images); at most {MAX_PARTS}")

    def run(self, run: ScriptRun, args: BaseModel) -> GenerationResult:
        assert isinstance(args, PromptMatrixArgs)
        self.check(run.request, args, run.services)
        prompts, parts = matrix_prompts(self._text(run.request, args), args)
        seed = run.request.seed if run.request.seed != -1 else random.randrange(2**32 - 1)
        field = "prompt" if args.prompt_type == "positive" else "negative_prompt"
        requests = [run.derive(**{field: text}, seed=seed + (i if args.different_seeds else 0), batch_count=1,
                               batch_size=1) for i, text in enumerate(prompts)]
        run.begin(len(requests))
        cells = []
        for sub in requests:
            if run.interrupted:
                break
            cells.append(cell_from(run.generate(sub), sub))
        done = [c for c in cells if c.image is not None]
        if not done:
            return GenerationResult(request=run.request, interrupted=run.interrupted)
        blank = blank_like(cells, run.request.width or 512, run.request.height or 512)
        images = [c.image if c.image is not None else blank for c in cells]
        images += [blank] * (len(prompts) - len(images))
        across = parts[:math.ceil(len(parts) / 2)]
        down = parts[len(across):]
        grid = grids.image_grid(images, rows=2 ** len(down), margin=args.margin_size,
                                background=grids.BACKGROUND if args.margin_size else (0, 0, 0))
        w, h = images[0].size
        hor = [[grids.GridAnnotation(t, bool(pos & (1 << i))) for i, t in enumerate(across)]
               for pos in range(2 ** len(across))]
        ver = [[grids.GridAnnotation(t, bool(pos & (1 << i))) for i, t in enumerate(down)]
               for pos in range(2 ** len(down))]
        grid = grids.draw_annotations(grid, w, h, hor, ver, args.margin_size)
        params, text = grid_params(done[0], {"Script": self.title})
        output = PlotOutput(grids=[(grid, params, text, run.save_grid(grid, params, text, done[0].request))],
                            cells=cells)
        result = assemble(run, output, include_images=True)
        result.interrupted = run.interrupted or len(cells) < len(prompts)
        return result

    def ui(self, is_img2img: bool) -> list[Any]:
        import gradio as gr

        pre = f"script_{'img2img' if is_img2img else 'txt2img'}_prompt_matrix_"
        with gr.Row():
            put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                       elem_id=f"{pre}put_at_start")
            different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                          elem_id=f"{pre}different_seeds")
        with gr.Row():
            prompt_type = gr.Radio(["positive", "negative"], label="Select prompt", value="positive",
                                   elem_id=f"{pre}prompt_type")
            delimiter = gr.Radio(["comma", "space"], label="Select joining char", value="comma",
                                 elem_id=f"{pre}variations_delimiter")
        margin = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                           elem_id=f"{pre}margin_size")
        return [put_at_start, different_seeds, prompt_type, delimiter, margin]
