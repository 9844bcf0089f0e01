"""Loopback (img2img): each loop's output is the next loop's input, the denoising strength moving
from the request's to "Final denoising strength" along the curve (Aggressive: sine, fast first;
Linear; Lazy: 1 - cosine, slow first). Seeds go up by one per loop. Batch count = how many
independent runs from the original image: with one, every loop's image is returned; with more,
the last image of each run. A one-row grid of those comes first when there are two or more.

A1111's positional script_args: loops, final_denoising_strength, denoising_curve,
append_interrogation ("None"; CLIP / DeepBooru interrogation is not in this app and is refused).
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modules.extensions.selectable import ScriptArgsError, ScriptRun, ScriptServices, SelectableScript
from modules.generation.request import GenerationRequest, MaskedContent
from modules.generation.result import GenerationResult

from selectable_scripts.collect import Collector, save_sample, with_fields

CURVES = ["Aggressive", "Linear", "Lazy"]


class LoopbackArgs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    loops: int = Field(4, ge=1, le=32, title="Loops")
    final_denoising_strength: float = Field(0.5, ge=0.0, le=1.0, title="Final denoising strength",
                                            json_schema_extra={"step": 0.01})
    denoising_curve: Literal["Aggressive", "Linear", "Lazy"] = Field(
        "Linear", title="Denoising strength curve", json_schema_extra={"choices": CURVES})
    append_interrogation: Literal["None", "CLIP", "DeepBooru"] = Field(
        "None", title="Append interrogated prompt at each iteration",
        json_schema_extra={"choices": ["None", "CLIP", "DeepBooru"]})


def strengths(initial: float, args: LoopbackArgs) -> list[float]:
    """The denoising strength of each loop: loop 0 the request's, the last one the final strength."""
    out = []
    for loop in range(args.loops):
        if loop == 0 or args.loops == 1:
            out.append(initial)
            continue
        progress = loop / (args.loops - 1)
        if args.denoising_curve == "Aggressive":
            progress = math.sin(progress * math.pi * 0.5)
        elif args.denoising_curve == "Lazy":
            progress = 1 - math.cos(progress * math.pi * 0.5)
        out.append(initial + (args.final_denoising_strength - initial) * progress)
    return out


class Loopback(SelectableScript):
    name = "loopback"
    title = "Loopback"
    Args = LoopbackArgs
    api_fields = ("loops", "final_denoising_strength", "denoising_curve", "append_interrogation")
    sort_order = 30

    def visible(self, is_img2img: bool) -> bool:
        return is_img2img

    def check(self, request: GenerationRequest, args: BaseModel, services: ScriptServices) -> None:
        assert isinstance(args, LoopbackArgs)
        if args.append_interrogation != "None":
            raise ScriptArgsError("append_interrogation", f"{args.append_interrogation!r}: interrogation is not "
                                                          "available in this app; use \"None\"")

    def run(self, run: ScriptRun, args: BaseModel) -> GenerationResult:
        assert isinstance(args, LoopbackArgs)
        self.check(run.request, args, run.services)
        base = run.request
        seed = base.seed if base.seed != -1 else random.randrange(2**32 - 1)
        schedule = strengths(base.denoising_strength, args)
        fields = {"Final denoising strength": args.final_denoising_strength, "Denoising curve": args.denoising_curve}
        run.begin(args.loops * base.batch_count)
        out = Collector(run)
        shown = []  # (image, params, text, path, request): every loop (one run) or each run's last image
        for _n in range(base.batch_count):
            image, inpaint, last = base.init_images[0], base.inpaint, None
            for strength in schedule:
                if run.interrupted:
                    break
                sub = run.derive(init_images=(image,), inpaint=inpaint, denoising_strength=strength, seed=seed,
                                 batch_size=1, batch_count=1, save_images=False)
                result = run.generate(sub)
                if not result.images:
                    break  # skipped (or failed): this run ends here, as A1111's
                out.note(result)
                params, text = with_fields(result.params[0], sub, fields)
                item = (result.images[0], params, text, save_sample(run, result.images[0], params, text, sub), sub)
                if base.batch_count == 1:
                    shown.append(item)
                last = item
                seed = params.seed + 1
                image = result.images[0]
                if inpaint is not None:  # later loops keep what the first one painted into the mask
                    inpaint = inpaint.model_copy(update={"masked_content": MaskedContent.ORIGINAL})
            if base.batch_count > 1 and last is not None and not run.interrupted:
                shown.append(last)
            if run.interrupted:
                break
        out.add_with_grid(shown, rows=1)
        return out.finish()

    def ui(self, is_img2img: bool) -> list[Any]:
        import gradio as gr

        pre = "script_img2img_loopback_"
        loops = gr.Slider(minimum=1, maximum=32, step=1, label="Loops", value=4, elem_id=f"{pre}loops")
        final = gr.Slider(minimum=0, maximum=1, step=0.01, label="Final denoising strength", value=0.5,
                          elem_id=f"{pre}final_denoising_strength")
        curve = gr.Dropdown(label="Denoising strength curve", choices=CURVES, value="Linear",
                            elem_id=f"{pre}denoising_curve")
        return [loops, final, curve]
