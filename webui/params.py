"""Generation controls shared by txt2img and img2img: sampler, size, batch, CFG, seed + variation,
restore faces and tiling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gradio as gr

from modules.generation.request import MAX_SIZE, MAX_STEPS, MIN_SIZE, SIZE_STEP
from modules.processing.samplers import SAMPLER_NAMES, SCHEDULE_NAMES
from webui.common import native_size_hint, tool_button
from webui.env import UiEnv

RANDOM, REUSE, SWAP = "🎲", "♻️", "⇅"


@dataclass
class SamplerControls:
    sampler: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider


@dataclass
class SizeControls:
    width: gr.Slider
    height: gr.Slider
    swap: gr.Button


@dataclass
class BatchControls:
    batch_count: gr.Slider
    batch_size: gr.Slider
    cfg_scale: gr.Slider


@dataclass
class SeedControls:
    seed: gr.Number
    random_seed: gr.Button
    reuse_seed: gr.Button
    extra: gr.Checkbox
    extra_row: gr.Group
    subseed: gr.Number
    random_subseed: gr.Button
    reuse_subseed: gr.Button
    subseed_strength: gr.Slider
    seed_resize_from_w: gr.Slider
    seed_resize_from_h: gr.Slider


def sampler_controls(env: UiEnv, tab: str) -> SamplerControls:
    opts = env.ctx.settings.get()
    default_sampler = opts.default_sampler if opts.default_sampler in SAMPLER_NAMES else SAMPLER_NAMES[0]
    default_schedule = opts.default_scheduler if opts.default_scheduler in SCHEDULE_NAMES else SCHEDULE_NAMES[0]
    with gr.Row(elem_id=f"{tab}_sampler_row"):
        sampler = env.component(gr.Dropdown, tab, "Sampling method", choices=list(SAMPLER_NAMES),
                                value=default_sampler, elem_id=f"{tab}_sampling", scale=2)
        scheduler = env.component(gr.Dropdown, tab, "Schedule type", choices=list(SCHEDULE_NAMES),
                                  value=default_schedule, elem_id=f"{tab}_scheduler", scale=1)
    steps = env.component(gr.Slider, tab, "Sampling steps", minimum=1, maximum=MAX_STEPS, step=1,
                          value=opts.default_steps, elem_id=f"{tab}_steps")
    return SamplerControls(sampler, scheduler, steps)


def size_controls(env: UiEnv, tab: str) -> SizeControls:
    # The start-up model's native size (the shipped 64 px model gets 64, SD 1.x 512, SDXL 1024).
    # Not written into ui-config.json, so it follows the model unless the user fixes a value there.
    default = native_size_hint(env.ctx.registry)
    with gr.Row(elem_id=f"{tab}_dimensions_row", equal_height=True):
        with gr.Column(scale=4, min_width=200):
            width = env.component(gr.Slider, tab, "Width", minimum=MIN_SIZE, maximum=MAX_SIZE, step=SIZE_STEP,
                                  value=default, elem_id=f"{tab}_width", _remember=False)
            height = env.component(gr.Slider, tab, "Height", minimum=MIN_SIZE, maximum=MAX_SIZE, step=SIZE_STEP,
                                   value=default, elem_id=f"{tab}_height", _remember=False)
        with gr.Column(scale=0, min_width=48, elem_classes=["dimensions-tools"]):
            swap = tool_button(SWAP, "Swap width and height", f"{tab}_res_switch_btn")
    swap.click(lambda w, h: (h, w), [width, height], [width, height], show_progress="hidden", queue=False)
    return SizeControls(width, height, swap)


def batch_controls(env: UiEnv, tab: str) -> BatchControls:
    opts = env.ctx.settings.get()
    with gr.Row(elem_id=f"{tab}_batch_row"):
        batch_count = env.component(gr.Slider, tab, "Batch count", minimum=1, maximum=100, step=1, value=1,
                                    elem_id=f"{tab}_batch_count")
        batch_size = env.component(gr.Slider, tab, "Batch size", minimum=1, maximum=8, step=1, value=1,
                                   elem_id=f"{tab}_batch_size")
    cfg_scale = env.component(gr.Slider, tab, "CFG Scale", minimum=1.0, maximum=30.0, step=0.5,
                              value=opts.default_cfg_scale, elem_id=f"{tab}_cfg_scale")
    return BatchControls(batch_count, batch_size, cfg_scale)


def seed_controls(env: UiEnv, tab: str) -> SeedControls:
    with gr.Row(elem_id=f"{tab}_seed_row", equal_height=True):
        seed = env.component(gr.Number, tab, "Seed", value=-1, precision=0, elem_id=f"{tab}_seed", scale=4,
                             min_width=160)
        random_seed = tool_button(RANDOM, "Set seed to -1, which will cause a new random number to be used every time",
                                  f"{tab}_random_seed")
        reuse_seed = tool_button(REUSE, "Reuse seed from last generation, mostly useful if it was randomized",
                                 f"{tab}_reuse_seed")
        extra = env.component(gr.Checkbox, tab, "Extra", value=False, elem_id=f"{tab}_subseed_show",
                              scale=0, min_width=80)
    with gr.Group(visible=bool(extra.value), elem_id=f"{tab}_seed_extras") as extra_row:
        with gr.Row(equal_height=True):
            subseed = env.component(gr.Number, tab, "Variation seed", value=-1, precision=0,
                                    elem_id=f"{tab}_subseed", scale=4)
            random_subseed = tool_button(RANDOM, "Set variation seed to -1 (random)", f"{tab}_random_subseed")
            reuse_subseed = tool_button(REUSE, "Reuse variation seed from last generation", f"{tab}_reuse_subseed")
            subseed_strength = env.component(gr.Slider, tab, "Variation strength", minimum=0.0, maximum=1.0,
                                             step=0.01, value=0.0, elem_id=f"{tab}_subseed_strength", scale=4)
        with gr.Row():
            seed_resize_from_w = env.component(gr.Slider, tab, "Resize seed from width", minimum=0,
                                               maximum=MAX_SIZE, step=SIZE_STEP, value=0,
                                               elem_id=f"{tab}_seed_resize_from_w")
            seed_resize_from_h = env.component(gr.Slider, tab, "Resize seed from height", minimum=0,
                                               maximum=MAX_SIZE, step=SIZE_STEP, value=0,
                                               elem_id=f"{tab}_seed_resize_from_h")
    random_seed.click(lambda: -1, None, seed, show_progress="hidden", queue=False)
    random_subseed.click(lambda: -1, None, subseed, show_progress="hidden", queue=False)
    extra.change(lambda on: gr.Group(visible=on), extra, extra_row, show_progress="hidden", queue=False)
    return SeedControls(seed, random_seed, reuse_seed, extra, extra_row, subseed, random_subseed, reuse_subseed,
                        subseed_strength, seed_resize_from_w, seed_resize_from_h)


@dataclass
class FeatureControls:
    """A1111's "Restore faces" and "Tiling" checkboxes (both tabs)."""

    restore_faces: gr.Checkbox
    tiling: gr.Checkbox

    def inputs(self) -> set:
        return {self.restore_faces, self.tiling}

    def request_fields(self, values: dict) -> dict[str, bool]:
        return {"restore_faces": bool(values[self.restore_faces]), "tiling": bool(values[self.tiling])}


def feature_controls(env: UiEnv, tab: str) -> FeatureControls:
    """The checkboxes start from the settings face_restoration / tiling (A1111 1.6+)."""
    opts = env.ctx.settings.get()
    with gr.Row(elem_id=f"{tab}_checkboxes", elem_classes=["checkboxes-row"]):
        restore_faces = env.component(gr.Checkbox, tab, "Restore faces", value=bool(opts.face_restoration),
                                      elem_id=f"{tab}_restore_faces")
        tiling = env.component(gr.Checkbox, tab, "Tiling", value=bool(opts.tiling), elem_id=f"{tab}_tiling")
    return FeatureControls(restore_faces, tiling)


def as_int(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    return int(round(float(value)))


def seed_fields(values: dict, seed: SeedControls) -> dict[str, Any]:
    """GenerationRequest seed fields from the controls; variation extras count only when shown."""
    fields: dict[str, Any] = {"seed": as_int(values[seed.seed], -1)}
    if values[seed.extra]:
        fields.update(subseed=as_int(values[seed.subseed], -1),
                      subseed_strength=float(values[seed.subseed_strength] or 0.0),
                      seed_resize_from_w=as_int(values[seed.seed_resize_from_w], 0),
                      seed_resize_from_h=as_int(values[seed.seed_resize_from_h], 0))
    return fields


def seed_inputs(seed: SeedControls) -> set:
    return {seed.seed, seed.extra, seed.subseed, seed.subseed_strength, seed.seed_resize_from_w,
            seed.seed_resize_from_h}


def optional_str(value: Optional[str]) -> Optional[str]:
    return value or None
