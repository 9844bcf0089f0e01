"""The Settings tab: every `Options` field as a control, grouped into A1111's sections.

"Apply settings" validates all changes together and saves them atomically through
SettingsStore.update; nothing is written when one value is invalid. Jobs read the settings when
they start, so a change applies to the next generation without a restart.

Output folders: as in A1111, the person at the machine may point them anywhere. When the UI is
reachable from other machines (--listen, --server-name, --share) they must stay inside the data
folder, as over the API (modules/settings_paths.py).

A1111's options that change nothing here yet are listed at the bottom (they are still stored, so
A1111 clients can read and write them through /sdapi/v1/options).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
import gradio as gr
from pydantic import ValidationError

from modules.processing.samplers import SAMPLER_NAMES, SCHEDULE_NAMES
from modules.settings import NO_EFFECT_YET, Options
from modules.settings_paths import escaping_paths
from webui.common import error, escape, format_validation_error
from webui.env import UiEnv

# Shown in the quicksettings bar instead (two controls for one option would disagree).
QUICKSETTINGS = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")

SECTIONS: dict[str, tuple[str, ...]] = {
    "Saving images/grids": ("samples_save", "samples_format", "samples_filename_pattern", "save_to_dirs",
                            "directories_filename_pattern", "grid_save", "grid_format", "jpeg_quality"),
    "Paths for saving": ("outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples",
                         "outdir_extras_samples", "outdir_grids", "outdir_txt2img_grids", "outdir_img2img_grids"),
    "Stable Diffusion": ("sd_checkpoints_limit", "randn_source", "vae_tiling", "vae_slicing"),
    "img2img": ("inpainting_mask_weight",),
    "Live previews": ("live_previews_enable", "show_progress_every_n_steps", "show_progress_type"),
    "Defaults": ("default_sampler", "default_scheduler", "default_steps", "default_cfg_scale"),
    "Postprocessing": ("face_restoration", "tiling", "filter_nsfw", "add_invisible_watermark"),
    "ControlNet": ("control_net_no_detectmap", "control_net_unit_count"),
    "Upscaling": ("ESRGAN_tile", "ESRGAN_tile_overlap", "DAT_tile", "DAT_tile_overlap", "SWIN_tile",
                  "SWIN_tile_overlap", "SCUNET_tile", "SCUNET_tile_overlap"),
}

LABELS = {
    "samples_save": "Always save all generated images",
    "control_net_no_detectmap": "Do not append detectmap to output",
    "control_net_unit_count": "Multi-ControlNet: ControlNet unit number (requires restart)",
    "samples_format": "File format for images",
    "samples_filename_pattern": "Images filename pattern",
    "save_to_dirs": "Save images to a subdirectory",
    "directories_filename_pattern": "Directory name pattern",
    "grid_save": "Always save all generated image grids",
    "grid_format": "File format for grids",
    "jpeg_quality": "Quality for saved jpeg and webp images",
    "outdir_samples": "Output directory for images; if empty, defaults to three directories below",
    "outdir_txt2img_samples": "Output directory for txt2img images",
    "outdir_img2img_samples": "Output directory for img2img images",
    "outdir_extras_samples": "Output directory for images from extras tab",
    "outdir_grids": "Output directory for grids; if empty, defaults to two directories below",
    "outdir_txt2img_grids": "Output directory for txt2img grids",
    "outdir_img2img_grids": "Output directory for img2img grids",
    "sd_checkpoints_limit": "Maximum number of checkpoints loaded at the same time",
    "randn_source": "Random number generator source",
    "inpainting_mask_weight": "Inpainting conditioning mask strength (9-channel inpainting models)",
    "live_previews_enable": "Show live previews of the created image",
    "show_progress_every_n_steps": "Live preview display period: show a new preview every N sampling steps (0 = off)",
    "show_progress_type": ("Live preview method: Full = a real VAE decode (slow, pretty); Approx cheap = a linear "
                           "map of the latents (no model, nearly free); Approx NN and TAESD draw as Approx cheap here"),
    "default_sampler": "Default sampling method (new pages)",
    "default_scheduler": "Default schedule type (new pages)",
    "default_steps": "Default sampling steps (new pages)",
    "default_cfg_scale": "Default CFG scale (new pages)",
    "face_restoration": "Restore faces (API requests that leave restore_faces out)",
    "tiling": "Tiling: produce a tileable picture (API requests that leave tiling out)",
    "filter_nsfw": "Filter NSFW content: black out images the safety checker in models/safety_checker flags",
    "add_invisible_watermark": "Add the invisible watermark of SD's reference scripts to images",
    "ESRGAN_tile": "Tile size for ESRGAN and Real-ESRGAN upscalers (0 = no tiling)",
    "ESRGAN_tile_overlap": "Tile overlap for ESRGAN upscalers (low values = visible seam)",
    "DAT_tile": "Tile size for DAT upscalers (0 = no tiling)",
    "DAT_tile_overlap": "Tile overlap for DAT upscalers (low values = visible seam)",
    "SWIN_tile": "Tile size for SwinIR upscalers (0 = no tiling)",
    "SWIN_tile_overlap": "Tile overlap for SwinIR upscalers (low values = visible seam)",
    "SCUNET_tile": "Tile size for ScuNET upscalers (0 = no tiling)",
    "SCUNET_tile_overlap": "Tile overlap for ScuNET upscalers (low values = visible seam)",
    "vae_tiling": ("VAE tiling: decode in tiles, so memory no longer grows with the image "
                   "(pixels differ slightly at the seams)"),
    "vae_slicing": "VAE slicing: decode a batch one image at a time (less peak memory, same pixels)",
}

CHOICES = {"default_sampler": list(SAMPLER_NAMES), "default_scheduler": list(SCHEDULE_NAMES)}


@dataclass
class SettingsTab:
    components: dict[str, gr.components.Component]
    apply: gr.Button
    reload: gr.Button
    result: gr.HTML


class FolderOutsideDataDir(ValueError):
    """An output folder that leads outside the data folder, set from a UI others can reach."""


def reachable_from_other_machines(args: Any) -> bool:
    return bool(getattr(args, "listen", False) or getattr(args, "server_name", None) or getattr(args, "share", False))


def _bounds(name: str) -> tuple[Any, Any]:
    lo = hi = None
    for meta in Options.model_fields[name].metadata:
        if isinstance(meta, annotated_types.Ge):
            lo = meta.ge
        elif isinstance(meta, annotated_types.Le):
            hi = meta.le
    return lo, hi


def _control(name: str, value: Any) -> gr.components.Component:
    field = Options.model_fields[name]
    label = LABELS.get(name, name.replace("_", " "))
    elem_id = f"setting_{name}"
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        return gr.Radio(choices=choices, value=value, label=label, elem_id=elem_id)
    if name in CHOICES:
        return gr.Dropdown(choices=CHOICES[name], value=value, label=label, elem_id=elem_id)
    if annotation is bool:
        return gr.Checkbox(value=value, label=label, elem_id=elem_id)
    if annotation in (int, float):
        lo, hi = _bounds(name)
        if lo is not None and hi is not None and hi - lo <= 1000:
            step = 1 if annotation is int else (0.5 if hi - lo > 10 else 0.01)
            return gr.Slider(minimum=lo, maximum=hi, step=step, value=value, label=label, elem_id=elem_id)
        return gr.Number(value=value, label=label, precision=0 if annotation is int else None, elem_id=elem_id)
    return gr.Textbox(value="" if value is None else str(value), label=label, elem_id=elem_id, lines=1)


def build(env: UiEnv) -> SettingsTab:
    opts = env.ctx.settings.get()
    names = [n for n in Options.model_fields if n not in QUICKSETTINGS]
    placed = {n for section in SECTIONS.values() for n in section}
    sections = {title: [n for n in fields if n in names] for title, fields in SECTIONS.items()}
    other = [n for n in names if n not in placed]
    if other:
        sections["Other"] = other
    components: dict[str, gr.components.Component] = {}
    with gr.Row(elem_id="settings_top"):
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
        reload = gr.Button("Reload UI", elem_id="settings_restart_gradio")
    result = gr.HTML("", elem_id="settings_result", js_on_load=None)
    path = env.ctx.settings.path
    gr.Markdown(f"Settings are saved to `{path}`." if path else "Settings are not saved to a file.",
                elem_classes=["hint"])
    with gr.Tabs(elem_id="settings_sections"):
        for title, fields in sections.items():
            if not fields:
                continue
            with gr.Tab(title, elem_id=f"settings_section_{title.split()[0].lower()}"):
                for name in fields:
                    components[name] = _control(name, getattr(opts, name))
        with gr.Tab("Not in effect yet", elem_id="settings_section_no_effect"):
            gr.Markdown("A1111 options that this app stores, and lists in `GET /sdapi/v1/options`, but does not "
                        "act on yet:\n\n" + ", ".join(f"`{n}`" for n in NO_EFFECT_YET),
                        elem_id="settings_no_effect_list")
    tab = SettingsTab(components, apply, reload, result)
    _wire(env, tab)
    return tab


def _coerce(name: str, value: Any) -> Any:
    annotation = Options.model_fields[name].annotation
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation is str and value is None:
        return ""
    return value


def apply_changes(env: UiEnv, values: dict[str, Any]) -> tuple[list[str], Options]:
    """Validate and save what differs from the current settings; returns (changed names, new)."""
    current = env.ctx.settings.get()
    changes = {n: _coerce(n, v) for n, v in values.items() if _coerce(n, v) != getattr(current, n)}
    if not changes:
        return [], current
    if reachable_from_other_machines(env.ctx.args):
        escaping = escaping_paths(changes, env.ctx.paths)
        if escaping:
            lines = "\n".join(f"{name}: {why}" for name, why in escaping.items())
            raise FolderOutsideDataDir("Settings not saved:\n" + lines)
    new = env.ctx.settings.update(changes)
    return sorted(changes), new


def _wire(env: UiEnv, tab: SettingsTab) -> None:
    names = list(tab.components)
    controls = [tab.components[n] for n in names]

    def apply(*values):
        try:
            changed, new = apply_changes(env, dict(zip(names, values)))
        except ValidationError as exc:
            raise gr.Error(escape("Settings not saved:\n" + format_validation_error(exc)).replace("\n", "<br>"),
                           title="Invalid setting")
        except Exception as exc:
            raise error(exc)
        if changed:
            msg = f"{len(changed)} setting{'s' if len(changed) != 1 else ''} changed: {', '.join(changed)}."
        else:
            msg = "No settings changed."
        return [f"<p class='note'>{escape(msg)}</p>", *[getattr(new, n) for n in names]]

    tab.apply.click(apply, controls, [tab.result, *controls], show_progress="hidden", api_visibility="private")
    tab.reload.click(None, None, None, js="() => { location.reload(); }")


def current_values(env: UiEnv, tab: SettingsTab) -> dict:
    opts = env.ctx.settings.get()
    return {tab.components[n]: getattr(opts, n) for n in tab.components}
