"""The bar above the tabs: checkpoint (with refresh), VAE and clip skip, as in A1111.

A change the user makes here is saved to config.json at once (SettingsStore.update) and used by
the next job. Values set by a program (pasting an infotext) change only this page: they go into
the next request as overrides, the saved settings stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from webui.common import (AUTOMATIC_VAE, checkpoint_titles, current_checkpoint, error, format_error,
                          tool_button, vae_choices)
from webui.env import UiEnv


@dataclass
class Quicksettings:
    checkpoint: gr.Dropdown
    refresh_checkpoints: gr.Button
    vae: gr.Dropdown
    refresh_vaes: gr.Button
    clip_skip: gr.Slider


def build(env: UiEnv) -> Quicksettings:
    ctx = env.ctx
    opts = ctx.settings.get()
    titles = checkpoint_titles(ctx.registry)
    current = current_checkpoint(ctx.registry, opts.sd_model_checkpoint)
    if current and current not in titles:
        titles.append(current)
    vaes = vae_choices(ctx.registry)
    vae = opts.sd_vae if opts.sd_vae in vaes else AUTOMATIC_VAE
    with gr.Row(elem_id="quicksettings", elem_classes=["quicksettings"], equal_height=True):
        checkpoint = gr.Dropdown(label="Stable Diffusion checkpoint", choices=titles, value=current,
                                 elem_id="setting_sd_model_checkpoint", scale=3, min_width=300,
                                 allow_custom_value=False)
        refresh_checkpoints = tool_button("🔄", "Refresh the list of checkpoints and VAEs",
                                          "refresh_sd_model_checkpoint")
        vae_dd = gr.Dropdown(label="SD VAE", choices=vaes, value=vae, elem_id="setting_sd_vae", scale=2,
                             min_width=200)
        refresh_vaes = tool_button("🔄", "Refresh the list of checkpoints and VAEs", "refresh_sd_vae")
        clip_skip = gr.Slider(label="Clip skip", minimum=1, maximum=12, step=1,
                              value=opts.CLIP_stop_at_last_layers, elem_id="setting_CLIP_stop_at_last_layers",
                              scale=2, min_width=200)
    q = Quicksettings(checkpoint, refresh_checkpoints, vae_dd, refresh_vaes, clip_skip)
    _wire(env, q)
    return q


def _wire(env: UiEnv, q: Quicksettings) -> None:
    ctx = env.ctx

    def choose_checkpoint(title: str):
        if not title:
            return gr.skip()
        previous = ctx.settings.get().sd_model_checkpoint
        try:
            if hasattr(ctx.registry, "select"):
                ctx.registry.select(title)
            ctx.settings.update({"sd_model_checkpoint": title})
        except Exception as exc:
            gr.Warning(format_error(exc))
            return gr.Dropdown(value=current_checkpoint(ctx.registry, previous))
        return gr.skip()

    def choose_vae(name: str):
        try:
            if hasattr(ctx.registry, "select_vae"):
                ctx.registry.select_vae(name or AUTOMATIC_VAE)
            ctx.settings.update({"sd_vae": name or AUTOMATIC_VAE})
        except Exception as exc:
            raise error(exc)

    def choose_clip_skip(value: float):
        try:
            ctx.settings.update({"CLIP_stop_at_last_layers": int(value)})
        except Exception as exc:
            raise error(exc)

    def refresh(selected_ckpt: str, selected_vae: str):
        try:
            if hasattr(ctx.registry, "refresh"):
                ctx.registry.refresh()
        except Exception as exc:
            raise error(exc)
        titles = checkpoint_titles(ctx.registry)
        vaes = vae_choices(ctx.registry)
        ckpt = selected_ckpt if selected_ckpt in titles else current_checkpoint(ctx.registry)
        if ckpt and ckpt not in titles:
            titles.append(ckpt)
        return (gr.Dropdown(choices=titles, value=ckpt),
                gr.Dropdown(choices=vaes, value=selected_vae if selected_vae in vaes else AUTOMATIC_VAE))

    q.checkpoint.input(choose_checkpoint, q.checkpoint, q.checkpoint, show_progress="minimal",
                       api_visibility="private")
    q.vae.input(choose_vae, q.vae, None, show_progress="hidden", api_visibility="private")
    q.clip_skip.input(choose_clip_skip, q.clip_skip, None, show_progress="hidden", trigger_mode="always_last",
                      api_visibility="private")
    for button in (q.refresh_checkpoints, q.refresh_vaes):
        button.click(refresh, [q.checkpoint, q.vae], [q.checkpoint, q.vae], show_progress="hidden",
                     api_visibility="private")


def current_values(env: UiEnv, q: Quicksettings) -> dict:
    """The bar as the saved settings say now; used when a page loads."""
    opts = env.ctx.settings.get()
    titles = checkpoint_titles(env.ctx.registry)
    current = current_checkpoint(env.ctx.registry, opts.sd_model_checkpoint)
    if current and current not in titles:
        titles.append(current)
    vaes = vae_choices(env.ctx.registry)
    return {q.checkpoint: gr.Dropdown(choices=titles, value=current),
            q.vae: gr.Dropdown(choices=vaes, value=opts.sd_vae if opts.sd_vae in vaes else AUTOMATIC_VAE),
            q.clip_skip: opts.CLIP_stop_at_last_layers}
