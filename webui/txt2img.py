"""The txt2img tab: prompt row on top, generation controls on the left, results on the right."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import gradio as gr

from modules.generation.request import GenerationRequest, Mode
from webui import extension_controls, extra_networks, hires_fix, output_panel, params, script_controls, toprow
from webui.env import UiEnv
from webui.quicksettings import Quicksettings

TAB = "txt2img"


@dataclass
class Txt2ImgTab:
    toprow: toprow.Toprow
    sampler: params.SamplerControls
    size: params.SizeControls
    batch: params.BatchControls
    seed: params.SeedControls
    panel: output_panel.OutputPanel
    extensions: extension_controls.ExtensionControls
    extra_networks: extra_networks.ExtraNetworksPanel
    features: params.FeatureControls  # restore faces, tiling
    hires: Optional[hires_fix.HiresControls] = None  # the "Hires. fix" accordion
    scripts: Optional[script_controls.ScriptControls] = None  # the Script dropdown (X/Y/Z plot...)


def build(env: UiEnv, quick: Quicksettings) -> Txt2ImgTab:
    row = toprow.build(env, TAB)
    extra = extra_networks.build(env, TAB)
    with gr.Row(elem_id=f"{TAB}_extra_tabs", equal_height=False):
        with gr.Column(scale=1, elem_id=f"{TAB}_settings", min_width=360):
            sampler = params.sampler_controls(env, TAB)
            features = params.feature_controls(env, TAB)
            size = params.size_controls(env, TAB)
            hires = hires_fix.build(env, TAB)
            batch = params.batch_controls(env, TAB)
            seed = params.seed_controls(env, TAB)
            extensions = extension_controls.build(env, TAB, is_img2img=False)
            scripts = script_controls.build(env, TAB, is_img2img=False)
        with gr.Column(scale=1, min_width=360):
            panel = output_panel.build(env, TAB)
    tab = Txt2ImgTab(row, sampler, size, batch, seed, panel, extensions, extra, features, hires, scripts)
    hires_fix.wire_label(hires, size.width, size.height)
    toprow.wire(env, row, sampler.steps)
    extra_networks.wire(env, extra, row.extra_networks)
    _wire(env, tab, quick)
    return tab


def request_inputs(tab: Txt2ImgTab, quick: Quicksettings) -> set:
    return {tab.toprow.prompt, tab.toprow.negative_prompt, tab.toprow.styles, tab.sampler.sampler,
            tab.sampler.scheduler, tab.sampler.steps, tab.size.width, tab.size.height, tab.batch.batch_count,
            tab.batch.batch_size, tab.batch.cfg_scale, quick.checkpoint, quick.vae, quick.clip_skip,
            *params.seed_inputs(tab.seed), *tab.extensions.inputs(), *tab.features.inputs(),
            *(tab.hires.inputs() if tab.hires else ()), *(tab.scripts.inputs() if tab.scripts else ())}


def common_fields(env: UiEnv, values: dict, row: toprow.Toprow, sampler: params.SamplerControls,
                  size: params.SizeControls, batch: params.BatchControls, seed: params.SeedControls,
                  quick: Quicksettings) -> dict:
    """Request fields both tabs read the same way. Styles are applied here, before the request,
    so the request (and the infotext) holds the prompt that was really used."""
    names = tuple(values[row.styles] or ())
    prompt, negative = env.styles.apply(values[row.prompt] or "", values[row.negative_prompt] or "", names)
    return dict(
        prompt=prompt, negative_prompt=negative, styles=names,
        sampler_name=values[sampler.sampler], scheduler=values[sampler.scheduler],
        steps=params.as_int(values[sampler.steps], 20),
        width=params.as_int(values[size.width], 512), height=params.as_int(values[size.height], 512),
        batch_count=params.as_int(values[batch.batch_count], 1), batch_size=params.as_int(values[batch.batch_size], 1),
        cfg_scale=float(values[batch.cfg_scale]),
        clip_skip=params.as_int(values[quick.clip_skip], 1),
        checkpoint=values[quick.checkpoint] or None,
        vae=values[quick.vae] or None,
        rng_source=env.ctx.settings.get().randn_source,
        **params.seed_fields(values, seed),
    )


def _wire(env: UiEnv, tab: Txt2ImgTab, quick: Quicksettings) -> None:
    def plan(values: dict) -> list[output_panel.JobStep]:
        fields = common_fields(env, values, tab.toprow, tab.sampler, tab.size, tab.batch, tab.seed, quick)
        fields.update(tab.features.request_fields(values))
        if tab.hires is not None:
            fields.update(tab.hires.request_fields(values, fields["styles"], env))
        extensions = tab.extensions.request_args(values)
        script = tab.scripts.request_call(values) if tab.scripts else None
        return [output_panel.JobStep(GenerationRequest(mode=Mode.TXT2IMG, extensions=extensions, script=script,
                                                       **fields))]

    output_panel.wire_generation(env, tab.panel, tab.toprow, plan, request_inputs(tab, quick))
    tab.seed.reuse_seed.click(output_panel.reuse_seed_handler("seed"), [tab.panel.shown, tab.panel.selected],
                              tab.seed.seed, show_progress="hidden")
    tab.seed.reuse_subseed.click(output_panel.reuse_seed_handler("subseed"), [tab.panel.shown, tab.panel.selected],
                                 tab.seed.subseed, show_progress="hidden")
