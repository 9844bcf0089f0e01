"""txt2img's "Hires. fix" accordion: A1111's controls and elem_ids, feeding GenerationRequest.hires.

As A1111's InputAccordion, opening the accordion switches hires fix on and closing it switches it
off; the "Enable" checkbox inside shows (and sets) the same state. The label above the controls
says "from WxH to WxH" with the rule the engine uses (modules/processing/hires.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gradio as gr

from modules.generation.request import MAX_SIZE, MAX_STEPS, HiresOptions
from modules.processing import hires
from modules.processing.latent_upscale import DEFAULT_LATENT_MODE, LATENT_MODES
from modules.processing.samplers import SAMPLER_NAMES, SCHEDULE_NAMES
from webui import params
from webui.env import UiEnv

BUILT_IN_UPSCALERS = ["None", "Lanczos", "Nearest"]  # until the upscaler registry answers


def upscaler_choices(env: UiEnv) -> list[str]:
    """Latent modes first, then the upscalers installed (A1111's order)."""
    try:
        names = list(env.ctx.postprocess.upscalers.names())
    except Exception:  # no registry (yet): the built-in ones always work
        names = BUILT_IN_UPSCALERS
    return [*LATENT_MODES, *(n for n in names if n not in LATENT_MODES)]


@dataclass
class HiresControls:
    accordion: gr.Accordion
    enable: gr.Checkbox
    final_resolution: gr.HTML
    upscaler: gr.Dropdown
    steps: gr.Slider
    denoising_strength: gr.Slider
    scale: gr.Slider
    resize_x: gr.Slider
    resize_y: gr.Slider
    sampler: gr.Dropdown
    scheduler: gr.Dropdown
    cfg_scale: gr.Slider
    prompt: gr.Textbox
    negative_prompt: gr.Textbox

    def inputs(self) -> set:
        return {self.enable, self.upscaler, self.steps, self.denoising_strength, self.scale, self.resize_x,
                self.resize_y, self.sampler, self.scheduler, self.cfg_scale, self.prompt, self.negative_prompt}

    def request_fields(self, values: dict, styles: tuple[str, ...] = (), env: Optional[UiEnv] = None) -> dict[str, Any]:
        """{"hires": HiresOptions, "denoising_strength": ...}, or {} when off. Styles apply to
        the hires prompts too (A1111), so the request holds the prompts really used."""
        if not values[self.enable]:
            return {}
        prompt, negative = values[self.prompt] or "", values[self.negative_prompt] or ""
        if env is not None and styles:
            prompt = env.styles.apply(prompt, "", styles)[0] if prompt else ""
            negative = env.styles.apply("", negative, styles)[1] if negative else ""
        cfg = float(values[self.cfg_scale] or 0)
        options = HiresOptions(
            scale=float(values[self.scale]), resize_x=params.as_int(values[self.resize_x], 0),
            resize_y=params.as_int(values[self.resize_y], 0), upscaler=values[self.upscaler] or DEFAULT_LATENT_MODE,
            second_pass_steps=params.as_int(values[self.steps], 0),
            sampler_name=None if hires.is_same(values[self.sampler], hires.SAME_SAMPLER) else values[self.sampler],
            scheduler=None if hires.is_same(values[self.scheduler], hires.SAME_SCHEDULER) else values[self.scheduler],
            prompt=prompt, negative_prompt=negative, cfg_scale=cfg if cfg > 0 else None)
        return {"hires": options, "denoising_strength": float(values[self.denoising_strength])}

    def paste_values(self, fields: dict) -> dict:
        """Control updates for `request_fields_from_infotext` output (A1111's paste rules: off
        unless the infotext has hires keys; absent keys go back to the defaults)."""
        hr = fields.get("hires")
        out: dict = {self.enable: hr is not None, self.accordion: gr.Accordion(open=hr is not None)}
        if hr is None:
            return out
        out.update({
            self.scale: hr["scale"], self.resize_x: hr["resize_x"], self.resize_y: hr["resize_y"],
            self.upscaler: hr["upscaler"], self.steps: hr["second_pass_steps"],
            self.sampler: hr["sampler_name"] or hires.SAME_SAMPLER,
            self.scheduler: hr["scheduler"] or hires.SAME_SCHEDULER,
            self.prompt: hr["prompt"], self.negative_prompt: hr["negative_prompt"],
            self.cfg_scale: hr["cfg_scale"] or 0,
        })
        if "denoising_strength" in fields:
            out[self.denoising_strength] = fields["denoising_strength"]
        return out

    def components(self) -> list:
        return [self.accordion, self.enable, self.scale, self.resize_x, self.resize_y, self.upscaler, self.steps,
                self.sampler, self.scheduler, self.prompt, self.negative_prompt, self.cfg_scale,
                self.denoising_strength]


def final_resolution(enabled: bool, width: Any, height: Any, scale: Any, resize_x: Any, resize_y: Any) -> str:
    """A1111's "from 512x512 to 1024x1024" label ("" when off or the size is not valid)."""
    if not enabled:
        return ""
    try:
        w, h = int(width), int(height)
        target = hires.target_size(w, h, HiresOptions(scale=float(scale), resize_x=int(resize_x or 0),
                                                      resize_y=int(resize_y or 0)))
    except (TypeError, ValueError) as err:
        return f"<span class='resolution-error'>{err}</span>"
    return (f"from <span class='resolution'>{w}x{h}</span> "
            f"to <span class='resolution'>{target.width}x{target.height}</span>")


def build(env: UiEnv, tab: str) -> HiresControls:
    c = lambda cls, label, **kw: env.component(cls, tab, label, **kw)  # noqa: E731
    with gr.Accordion("Hires. fix", open=False, elem_id=f"{tab}_hr") as accordion:
        with gr.Row():
            enable = c(gr.Checkbox, "Enable hires. fix", value=False, elem_id=f"{tab}_enable_hr", scale=1)
            final = gr.HTML(value="", elem_id=f"{tab}_hr_finalres")
        with gr.Row(elem_id=f"{tab}_hires_fix_row1"):
            choices = upscaler_choices(env)
            upscaler = c(gr.Dropdown, "Upscaler", choices=choices, value=DEFAULT_LATENT_MODE,
                         elem_id=f"{tab}_hr_upscaler")
            steps = c(gr.Slider, "Hires steps", minimum=0, maximum=MAX_STEPS, step=1, value=0,
                      elem_id=f"{tab}_hires_steps")
            denoising = c(gr.Slider, "Denoising strength", minimum=0.0, maximum=1.0, step=0.01, value=0.7,
                          elem_id=f"{tab}_denoising_strength")
        with gr.Row(elem_id=f"{tab}_hires_fix_row2"):
            scale = c(gr.Slider, "Upscale by", minimum=1.0, maximum=4.0, step=0.05, value=2.0, elem_id=f"{tab}_hr_scale")
            resize_x = c(gr.Slider, "Resize width to", minimum=0, maximum=MAX_SIZE, step=8, value=0,
                         elem_id=f"{tab}_hr_resize_x")
            resize_y = c(gr.Slider, "Resize height to", minimum=0, maximum=MAX_SIZE, step=8, value=0,
                         elem_id=f"{tab}_hr_resize_y")
        with gr.Row(elem_id=f"{tab}_hires_fix_row3"):
            sampler = c(gr.Dropdown, "Hires sampling method", choices=[hires.SAME_SAMPLER, *SAMPLER_NAMES],
                        value=hires.SAME_SAMPLER, elem_id="hr_sampler")
            scheduler = c(gr.Dropdown, "Hires schedule type", choices=[hires.SAME_SCHEDULER, *SCHEDULE_NAMES],
                          value=hires.SAME_SCHEDULER, elem_id="hr_scheduler")
            cfg = c(gr.Slider, "Hires CFG Scale", minimum=0.0, maximum=30.0, step=0.5, value=0.0,
                    info="0 = the CFG scale above", elem_id=f"{tab}_hr_cfg")
        with gr.Row(elem_id=f"{tab}_hires_fix_row4"):
            prompt = c(gr.Textbox, "Hires prompt", lines=3, elem_id="hires_prompt", elem_classes=["prompt"],
                       placeholder="Prompt for hires fix pass.\nLeave empty to use the same prompt as in first pass.")
            negative = c(gr.Textbox, "Hires negative prompt", lines=3, elem_id="hires_neg_prompt",
                         elem_classes=["prompt"],
                         placeholder="Negative prompt for hires fix pass.\n"
                                     "Leave empty to use the same negative prompt as in first pass.")
    controls = HiresControls(accordion, enable, final, upscaler, steps, denoising, scale, resize_x, resize_y,
                             sampler, scheduler, cfg, prompt, negative)
    # as A1111's InputAccordion: open = on
    accordion.expand(lambda: True, None, enable, show_progress="hidden")
    accordion.collapse(lambda: False, None, enable, show_progress="hidden")
    return controls


def wire_label(controls: HiresControls, width: gr.components.Component, height: gr.components.Component) -> None:
    inputs = [controls.enable, width, height, controls.scale, controls.resize_x, controls.resize_y]
    for component in inputs:
        component.change(final_resolution, inputs, controls.final_resolution, show_progress="hidden")


__all__ = ["HiresControls", "build", "final_resolution", "upscaler_choices", "wire_label"]
