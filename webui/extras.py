"""The Extras tab (A1111's layout): Single Image / Batch Process / Batch from Directory on the
left with the upscale and face restoration controls, results on the right.

Generate builds one `ExtrasRequest`, checks names before queueing (the API's checks), and runs an
`ExtrasTask` on the app's one JobQueue, so it never uses the device at the same time as a
generation. Batch folders are typed paths on the server: when the UI is reachable from other
machines they must stay inside the data folder (as output folder settings must).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import gradio as gr
from PIL import Image

from modules.processing import image_ops
from modules.postprocess import extras
from modules.postprocess.extras import ExtrasInput, ExtrasInputError, ExtrasRequest, ExtrasSave, ExtrasTask
from webui import jobs
from webui.common import error, escape
from webui.env import UiEnv
from webui.output_panel import infotext_html
from webui.settings_tab import reachable_from_other_machines

TAB = "extras"
MODES = ("single", "batch", "directory")
SUBTAB_IDS = {"single": "extras_single_tab", "batch": "extras_batch_process_tab",
              "directory": "extras_batch_directory_tab"}
RESIZE_TAB_IDS = ("extras_scale_by_tab", "extras_scale_to_tab")


@dataclass
class ExtrasTab:
    mode: gr.State
    subtabs: gr.Tabs
    image: gr.Image
    image_batch: gr.Files
    input_dir: gr.Textbox
    output_dir: gr.Textbox
    show_results: gr.Checkbox
    resize_mode: gr.State
    resize_tabs: gr.Tabs
    upscaling_resize: gr.Slider
    upscaling_resize_w: gr.Slider
    upscaling_resize_h: gr.Slider
    upscaling_crop: gr.Checkbox
    upscaler_1: gr.Dropdown
    upscaler_2: gr.Dropdown
    upscaler_2_visibility: gr.Slider
    gfpgan_visibility: gr.Slider
    codeformer_visibility: gr.Slider
    codeformer_weight: gr.Slider
    upscale_first: gr.Checkbox
    generate: gr.Button
    progress: gr.HTML
    gallery: gr.Gallery
    info: gr.HTML
    log: gr.HTML
    infotexts: gr.State
    models_note: gr.Markdown


def upscaler_names(env: UiEnv) -> list[str]:
    try:
        return list(env.ctx.postprocess.upscalers.names())
    except Exception:  # a broken model folder must not take the tab down; the built-ins still work
        return ["None", "Lanczos", "Nearest"]


def models_note(postprocess: Any) -> str:
    """Markdown naming what is missing or broken and the file to put where (nothing is downloaded)."""
    lines = []
    try:
        lines += [f"- {item.message}" for item in postprocess.face_restorers.items()
                  if not item.usable and item.message]
        missing = [r for r in postprocess.upscalers.realesrgan_models() if not r.installed]
        if missing:
            files = ", ".join(f"`{Path(r.local_path).name}` ({r.name})" for r in missing)
            lines.append(f"- Real-ESRGAN: put {files} in `{Path(missing[0].local_path).parent}`")
        lines += [f"- `{u.path.name}` cannot be used: {u.reason}" for u in postprocess.upscalers.unusable()]
    except Exception as exc:  # a broken model folder must not take the tab down
        lines.append(f"- the model folders could not be read: {exc}")
    if not lines:
        return "Every face restorer and Real-ESRGAN release is installed."
    return ("Other upscalers (ESRGAN, SwinIR, ScuNET, DAT) go in `models/<that name>`; restart is not needed.\n\n"
            + "\n".join(lines))


def build(env: UiEnv) -> ExtrasTab:
    names = upscaler_names(env)
    mode, resize_mode = gr.State("single"), gr.State(0)

    def slider(label: str, **kwargs) -> gr.Slider:
        return env.component(gr.Slider, TAB, label, **kwargs)

    with gr.Row(equal_height=False, elem_id="extras_row"):
        with gr.Column(variant="compact", elem_id="extras_settings"):
            with gr.Tabs(elem_id="mode_extras", selected=SUBTAB_IDS["single"]) as subtabs:
                with gr.Tab("Single Image", id=SUBTAB_IDS["single"], elem_id=SUBTAB_IDS["single"]) as t_single:
                    image = gr.Image(label="Source", sources=["upload", "clipboard"], type="filepath",
                                     image_mode=None, format="png", elem_id="extras_image", height=360)
                with gr.Tab("Batch Process", id=SUBTAB_IDS["batch"], elem_id=SUBTAB_IDS["batch"]) as t_batch:
                    image_batch = gr.Files(label="Batch Process", file_count="multiple", type="filepath",
                                           elem_id="extras_image_batch")
                with gr.Tab("Batch from Directory", id=SUBTAB_IDS["directory"],
                            elem_id=SUBTAB_IDS["directory"]) as t_directory:
                    input_dir = gr.Textbox(label="Input directory", placeholder="A directory on the same machine "
                                           "where the server is running.", elem_id="extras_batch_input_dir")
                    output_dir = gr.Textbox(label="Output directory", placeholder="Leave blank to save images to "
                                            "the default path.", elem_id="extras_batch_output_dir")
                    show_results = env.component(gr.Checkbox, TAB, "Show result images", value=True,
                                                 elem_id="extras_show_extras_results")
            generate = gr.Button("Generate", variant="primary", elem_id="extras_generate")
            with gr.Tabs(elem_id="extras_resize_mode", selected=RESIZE_TAB_IDS[0]) as resize_tabs:
                with gr.Tab("Scale by", id=RESIZE_TAB_IDS[0], elem_id=RESIZE_TAB_IDS[0]) as t_by:
                    upscaling_resize = slider("Resize", minimum=1.0, maximum=8.0, step=0.05, value=4,
                                              elem_id="extras_upscaling_resize")
                with gr.Tab("Scale to", id=RESIZE_TAB_IDS[1], elem_id=RESIZE_TAB_IDS[1]) as t_to:
                    with gr.Row():
                        with gr.Column(scale=4):
                            upscaling_resize_w = slider("Width", minimum=64, maximum=8192, step=8, value=512,
                                                        elem_id="extras_upscaling_resize_w")
                            upscaling_resize_h = slider("Height", minimum=64, maximum=8192, step=8, value=512,
                                                        elem_id="extras_upscaling_resize_h")
                        with gr.Column(scale=1, min_width=120):
                            upscaling_crop = env.component(gr.Checkbox, TAB, "Crop to fit", value=True,
                                                           elem_id="extras_upscaling_crop")
            with gr.Row():
                upscaler_1 = env.component(gr.Dropdown, TAB, "Upscaler 1", choices=names, value=names[0],
                                           elem_id="extras_upscaler_1")
            with gr.Row():
                upscaler_2 = env.component(gr.Dropdown, TAB, "Upscaler 2", choices=names, value=names[0],
                                           elem_id="extras_upscaler_2")
                upscaler_2_visibility = slider("Upscaler 2 visibility", minimum=0.0, maximum=1.0, step=0.001,
                                               value=0.0, elem_id="extras_upscaler_2_visibility")
            gfpgan_visibility = slider("GFPGAN visibility", minimum=0.0, maximum=1.0, step=0.001, value=0.0,
                                       elem_id="extras_gfpgan_visibility")
            with gr.Row():
                codeformer_visibility = slider("CodeFormer visibility", minimum=0.0, maximum=1.0, step=0.001,
                                               value=0.0, elem_id="extras_codeformer_visibility")
                codeformer_weight = slider("CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
                                           minimum=0.0, maximum=1.0, step=0.001, value=0.0,
                                           elem_id="extras_codeformer_weight")
            upscale_first = env.component(gr.Checkbox, TAB, "Upscale Before Restoring Faces", value=False,
                                          elem_id="extras_upscale_before_face_fix")
            with gr.Accordion("Models: what is missing, and where it goes", open=False, elem_id="extras_models"):
                note = gr.Markdown(models_note(env.ctx.postprocess), elem_id="extras_models_note")
        with gr.Column(elem_id="extras_results", elem_classes=["results"]):
            progress = gr.HTML("", elem_id="extras_progress", elem_classes=["progress-holder"], padding=False)
            gallery = gr.Gallery(label="Result", show_label=False, elem_id="extras_gallery", columns=4, height=480,
                                 preview=True, object_fit="contain", format="png", interactive=False,
                                 buttons=["download", "fullscreen"])
            info = gr.HTML("", elem_id="html_info_extras", elem_classes=["infotext"])
            log = gr.HTML("", elem_id="html_log_extras", elem_classes=["html-log"])
    tab = ExtrasTab(mode, subtabs, image, image_batch, input_dir, output_dir, show_results, resize_mode, resize_tabs,
                    upscaling_resize, upscaling_resize_w, upscaling_resize_h, upscaling_crop, upscaler_1, upscaler_2,
                    upscaler_2_visibility, gfpgan_visibility, codeformer_visibility, codeformer_weight, upscale_first,
                    generate, progress, gallery, info, log, gr.State([]), note)
    for name, subtab in zip(MODES, (t_single, t_batch, t_directory)):
        subtab.select(lambda m=name: m, None, mode, show_progress="hidden", queue=False)
    for index, subtab in enumerate((t_by, t_to)):
        subtab.select(lambda i=index: i, None, resize_mode, show_progress="hidden", queue=False)
    _wire(env, tab)
    return tab


def switch_to_single(tab: ExtrasTab, image: Image.Image) -> dict:
    """Updates that show `image` in Single Image (a programmatic selection fires no Tab.select)."""
    return {tab.subtabs: gr.Tabs(selected=SUBTAB_IDS["single"]), tab.mode: "single", tab.image: image}


# ---------------------------------------------------------------------------------------------
# Generate


def request_from(tab: ExtrasTab, values: dict) -> ExtrasRequest:
    return ExtrasRequest(
        resize_mode=int(values[tab.resize_mode] or 0), upscaling_resize=values[tab.upscaling_resize],
        upscaling_resize_w=values[tab.upscaling_resize_w], upscaling_resize_h=values[tab.upscaling_resize_h],
        upscaling_crop=bool(values[tab.upscaling_crop]), upscaler_1=values[tab.upscaler_1] or "None",
        upscaler_2=values[tab.upscaler_2] or "None",
        extras_upscaler_2_visibility=values[tab.upscaler_2_visibility],
        gfpgan_visibility=values[tab.gfpgan_visibility], codeformer_visibility=values[tab.codeformer_visibility],
        codeformer_weight=values[tab.codeformer_weight], upscale_first=bool(values[tab.upscale_first]),
    )


def plan_task(env: UiEnv, tab: ExtrasTab, values: dict) -> ExtrasTask:
    """The job for the controls' values; ExtrasInputError / ValidationError name what is wrong."""
    ctx = env.ctx
    request = request_from(tab, values)
    extras.check_names(request, ctx.postprocess)
    opts = ctx.settings.get()
    limit = opts.max_image_pixels
    confined = reachable_from_other_machines(ctx.args)
    mode = values[tab.mode]
    output_dir: Optional[Path] = None
    keep = True
    if mode == "directory":
        folder = extras.resolve_folder(values[tab.input_dir], "Input directory", ctx.paths, confined, must_exist=True)
        inputs = extras.list_folder_images(folder)
        if (values[tab.output_dir] or "").strip():
            output_dir = extras.resolve_folder(values[tab.output_dir], "Output directory", ctx.paths, confined,
                                               must_exist=False)
        keep = bool(values[tab.show_results])
    elif mode == "batch":
        inputs = [ExtrasInput(image=_open(path, limit), name=Path(path).name) for path in values[tab.image_batch] or ()]
    else:
        path = values[tab.image]
        inputs = [ExtrasInput(image=_open(path, limit))] if path else []
    if not inputs:
        raise ExtrasInputError("Source", "no image to process: upload one (or pick a folder that holds images)")
    for item in inputs:
        if item.image is not None:
            extras.check_output_size(request, item.image.width, item.image.height)
    save = ExtrasSave.from_options(opts, ctx.paths.outputs_dir, output_dir)  # A1111's tab always saves
    return ExtrasTask(request, inputs, ctx.postprocess, save=save, max_pixels=limit, keep_images=keep)


def _open(path: Any, limit: int) -> Image.Image:
    return image_ops.open_image(path, limit)


def _wire(env: UiEnv, tab: ExtrasTab) -> None:
    ctx = env.ctx
    inputs = {tab.mode, tab.image, tab.image_batch, tab.input_dir, tab.output_dir, tab.show_results,
              tab.resize_mode, tab.upscaling_resize, tab.upscaling_resize_w, tab.upscaling_resize_h,
              tab.upscaling_crop, tab.upscaler_1, tab.upscaler_2, tab.upscaler_2_visibility,
              tab.gfpgan_visibility, tab.codeformer_visibility, tab.codeformer_weight, tab.upscale_first}

    def run(values: dict):
        try:
            task = plan_task(env, tab, values)
            job = ctx.queue.submit(task)
        except Exception as exc:
            raise error(exc)
        yield {tab.generate: gr.Button(interactive=False), tab.progress: jobs.progress_html(None), tab.log: ""}
        started = time.perf_counter()
        for update in jobs.follow(ctx, job):
            yield {tab.progress: jobs.progress_html(update)}
        try:
            result = job.future.result()
        except Exception as exc:
            raise error(exc)
        shown = [out for out in result.outputs if out.image is not None]
        texts = [out.infotext for out in shown]
        notes = [f"<p class='time'>Time taken: <b>{time.perf_counter() - started:.2f} s</b></p>"]
        notes += [f"<p class='warning'>{escape(w)}</p>" for w in result.warnings]
        if result.interrupted:
            notes.append("<p class='note'>Interrupted.</p>")
        saved = [out.path for out in result.outputs if out.path]
        if saved:
            notes.append(f"<p class='note'>Saved {len(saved)} image(s) in {escape(Path(saved[0]).parent)}</p>")
        yield {
            tab.gallery: gr.Gallery(value=[out.image for out in shown], selected_index=0 if shown else None),
            tab.info: infotext_html(result.infotext),
            tab.log: "".join(notes) + f"<span class='job-ids' hidden>{escape(job.id)}</span>",
            tab.infotexts: texts,
        }

    def done():
        return gr.Button(interactive=True), ""

    tab.generate.click(run, inputs, [tab.generate, tab.progress, tab.gallery, tab.info, tab.log, tab.infotexts],
                       show_progress="hidden", concurrency_limit=None, api_visibility="private").then(
        done, None, [tab.generate, tab.progress], show_progress="hidden", queue=False)

    def on_select(texts: list, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        return infotext_html(texts[index] if texts and 0 <= index < len(texts) else "")

    tab.gallery.select(on_select, tab.infotexts, tab.info, show_progress="hidden", api_visibility="private")


def refreshed_choices(env: UiEnv, tab: ExtrasTab) -> dict:
    """On page load: upscalers dropped into the model folders since start-up appear."""
    names = upscaler_names(env)
    return {tab.upscaler_1: gr.Dropdown(choices=names), tab.upscaler_2: gr.Dropdown(choices=names),
            tab.models_note: gr.Markdown(models_note(env.ctx.postprocess))}


__all__ = ["ExtrasTab", "build", "switch_to_single", "plan_task", "refreshed_choices"]
