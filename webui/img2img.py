"""The img2img tab with A1111's sub-tabs: img2img, Sketch, Inpaint (mask drawn on the image),
Inpaint upload (a separate mask image) and Batch (input and output folders)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import gradio as gr
from PIL import Image, ImageOps

from modules.atomic_write import write_bytes_atomic
from modules.image_files import encode_png
from modules.processing import image_ops
from modules.generation.request import GenerationRequest, InpaintArea, InpaintOptions, MaskedContent, Mode, ResizeMode
from modules.generation.result import GenerationResult
from webui import extension_controls, extra_networks, output_panel, params, script_controls, toprow
from webui.env import UiEnv
from webui.quicksettings import Quicksettings
from webui.txt2img import common_fields

TAB = "img2img"
MODES = ("img2img", "sketch", "inpaint", "inpaint_upload", "batch")
SUBTAB_IDS = {"img2img": "img2img_img2img_tab", "sketch": "img2img_img2img_sketch_tab",
              "inpaint": "img2img_inpaint_tab", "inpaint_upload": "img2img_inpaint_upload_tab",
              "batch": "img2img_batch_tab"}
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
EDITOR_HEIGHT = 480  # the output gallery's height too, so source and result show at one size
# The inpaint brush's radius as a share of the picture's shorter side: gradio's fixed 25 px
# covers most of a 64 px picture; 5 % is that same 25 px on a 512 px one.
BRUSH_PERCENT = 5
MASK_COLOR = "#ffffff"


@dataclass
class InpaintControls:
    group: gr.Group
    mask_blur: gr.Slider
    mask_mode: gr.Radio
    masked_content: gr.Radio
    inpaint_area: gr.Radio
    padding: gr.Slider


@dataclass
class Img2ImgTab:
    toprow: toprow.Toprow
    mode: gr.State
    subtabs: gr.Tabs
    init_img: gr.Image
    sketch: gr.ImageEditor
    inpaint_editor: gr.ImageEditor
    brush_size: gr.Slider
    inpaint_image: gr.Image
    inpaint_mask: gr.Image
    batch_input_dir: gr.Textbox
    batch_output_dir: gr.Textbox
    batch_mask_dir: gr.Textbox
    resize_mode: gr.Radio
    inpaint: InpaintControls
    sampler: params.SamplerControls
    size: params.SizeControls
    batch: params.BatchControls
    denoising_strength: gr.Slider
    seed: params.SeedControls
    panel: output_panel.OutputPanel
    extensions: extension_controls.ExtensionControls
    extra_networks: extra_networks.ExtraNetworksPanel
    features: params.FeatureControls  # restore faces, tiling
    scripts: Optional[script_controls.ScriptControls] = None  # the Script dropdown (X/Y/Z plot...)


def build(env: UiEnv, quick: Quicksettings) -> Img2ImgTab:
    row = toprow.build(env, TAB)
    extra = extra_networks.build(env, TAB)
    mode = gr.State("img2img")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=360, elem_id=f"{TAB}_settings"):
            with gr.Tabs(elem_id="mode_img2img", selected=SUBTAB_IDS["img2img"]) as subtabs:
                with gr.Tab("img2img", id=SUBTAB_IDS["img2img"], elem_id=SUBTAB_IDS["img2img"]) as t_img2img:
                    init_img = gr.Image(label="Image for img2img", type="pil", image_mode="RGBA",
                                        sources=["upload", "clipboard"], elem_id="img2img_image",
                                        height=EDITOR_HEIGHT)
                with gr.Tab("Sketch", id=SUBTAB_IDS["sketch"], elem_id=SUBTAB_IDS["sketch"]) as t_sketch:
                    sketch = gr.ImageEditor(label="Image for img2img (sketch)", type="pil", image_mode="RGBA",
                                            sources=["upload", "clipboard"], elem_id="img2img_sketch",
                                            height=EDITOR_HEIGHT, layers=False, format="png",
                                            brush=gr.Brush(color_mode="defaults"))
                with gr.Tab("Inpaint", id=SUBTAB_IDS["inpaint"], elem_id=SUBTAB_IDS["inpaint"]) as t_inpaint:
                    inpaint_editor = gr.ImageEditor(
                        label="Image for inpainting with mask", type="pil", image_mode="RGBA",
                        sources=["upload", "clipboard"], elem_id="img2maskimg", height=EDITOR_HEIGHT,
                        layers=False, format="png", eraser=gr.Eraser(), brush=mask_brush())
                    brush_size = env.component(gr.Slider, TAB, "Brush size (% of the picture's shorter side)",
                                               minimum=1, maximum=50, step=1, value=BRUSH_PERCENT,
                                               elem_id="img2img_mask_brush_size")
                with gr.Tab("Inpaint upload", id=SUBTAB_IDS["inpaint_upload"],
                            elem_id=SUBTAB_IDS["inpaint_upload"]) as t_upload:
                    inpaint_image = gr.Image(label="Image for img2img", type="pil", image_mode="RGBA",
                                             sources=["upload", "clipboard"], elem_id="img_inpaint_base",
                                             height=EDITOR_HEIGHT // 2)
                    inpaint_mask = gr.Image(label="Mask", type="pil", image_mode="RGBA",
                                            sources=["upload", "clipboard"], elem_id="img_inpaint_mask",
                                            height=EDITOR_HEIGHT // 2)
                with gr.Tab("Batch", id=SUBTAB_IDS["batch"], elem_id=SUBTAB_IDS["batch"]) as t_batch:
                    gr.Markdown("Process images in a folder on the same machine where the server is running. "
                                "Leave the output directory empty to save to the usual outputs folder. "
                                "Add an inpaint mask directory (masks named like their images) to inpaint.",
                                elem_classes=["hint"])
                    batch_input_dir = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
                    batch_output_dir = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
                    batch_mask_dir = gr.Textbox(
                        label="Inpaint batch mask directory (required for inpaint batch processing only)",
                        elem_id="img2img_batch_inpaint_mask_dir")
            resize_mode = env.component(gr.Radio, TAB, "Resize mode", choices=[m.value for m in ResizeMode],
                                        value=ResizeMode.JUST_RESIZE.value, elem_id="resize_mode")
            with gr.Group(visible=False, elem_id="inpaint_controls") as inpaint_group:
                mask_blur = env.component(gr.Slider, TAB, "Mask blur", minimum=0, maximum=64, step=1, value=4,
                                          elem_id="img2img_mask_blur")
                mask_mode = env.component(gr.Radio, TAB, "Mask mode", choices=list(MASK_MODES),
                                          value=MASK_MODES[0], elem_id="img2img_mask_mode")
                masked_content = env.component(gr.Radio, TAB, "Masked content",
                                               choices=[m.value for m in MaskedContent],
                                               value=MaskedContent.ORIGINAL.value,
                                               elem_id="img2img_inpainting_fill")
                with gr.Row():
                    inpaint_area = env.component(gr.Radio, TAB, "Inpaint area",
                                                 choices=[a.value for a in InpaintArea],
                                                 value=InpaintArea.WHOLE_PICTURE.value,
                                                 elem_id="img2img_inpaint_full_res")
                    padding = env.component(gr.Slider, TAB, "Only masked padding, pixels", minimum=0, maximum=256,
                                            step=4, value=32, elem_id="img2img_inpaint_full_res_padding")
            sampler = params.sampler_controls(env, TAB)
            features = params.feature_controls(env, TAB)
            size = params.size_controls(env, TAB)
            batch = params.batch_controls(env, TAB)
            denoising_strength = env.component(gr.Slider, TAB, "Denoising strength", minimum=0.0, maximum=1.0,
                                               step=0.01, value=0.75, elem_id="img2img_denoising_strength")
            seed = params.seed_controls(env, TAB)
            extensions = extension_controls.build(env, TAB, is_img2img=True)
            scripts = script_controls.build(env, TAB, is_img2img=True)
        with gr.Column(scale=1, min_width=360):
            panel = output_panel.build(env, TAB)

    inpaint = InpaintControls(inpaint_group, mask_blur, mask_mode, masked_content, inpaint_area, padding)
    tab = Img2ImgTab(row, mode, subtabs, init_img, sketch, inpaint_editor, brush_size, inpaint_image, inpaint_mask,
                     batch_input_dir, batch_output_dir, batch_mask_dir, resize_mode, inpaint, sampler, size, batch,
                     denoising_strength, seed, panel, extensions, extra, features, scripts)
    for name, subtab in zip(MODES, (t_img2img, t_sketch, t_inpaint, t_upload, t_batch)):
        subtab.select(lambda m=name: (m, gr.Group(visible=m in ("inpaint", "inpaint_upload", "batch"))), None,
                      [mode, inpaint_group], show_progress="hidden", queue=False)
    toprow.wire(env, row, sampler.steps)
    extra_networks.wire(env, extra, row.extra_networks)
    _wire(env, tab, quick)
    _wire_brush(tab)
    return tab


def mask_brush(radius: Optional[int] = None) -> gr.Brush:
    """The inpaint editor's white mask brush; `radius` in the picture's pixels (None: gradio's 25)."""
    return gr.Brush(colors=[MASK_COLOR], default_color=MASK_COLOR, color_mode="fixed",
                    default_size=radius if radius else "auto")


def brush_radius(size: tuple[int, int], percent: float) -> int:
    return max(1, round(min(size) * float(percent) / 100))


def _wire_brush(tab: Img2ImgTab) -> None:
    """Size the brush to the picture when one is uploaded and when the slider moves (a picture
    sent from a gallery gets its brush with it, in app.py)."""

    def fit(value: Any, percent: float):
        background, _mask, composite = editor_parts(value)
        picture = background or composite
        if picture is None:
            return gr.skip()
        return gr.ImageEditor(brush=mask_brush(brush_radius(picture.size, percent or BRUSH_PERCENT)))

    for event in (tab.inpaint_editor.upload, tab.brush_size.change):
        event(fit, [tab.inpaint_editor, tab.brush_size], tab.inpaint_editor, show_progress="hidden", queue=False,
              trigger_mode="always_last", api_visibility="private")


def switch_to(tab: Img2ImgTab, mode: str) -> dict:
    """Updates that show sub-tab `mode` (programmatic selection does not fire Tab.select)."""
    return {tab.subtabs: gr.Tabs(selected=SUBTAB_IDS[mode]), tab.mode: mode,
            tab.inpaint.group: gr.Group(visible=mode in ("inpaint", "inpaint_upload", "batch"))}


# ---------------------------------------------------------------------------------------------
# images from the controls


def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """RGBA onto a plain background, as A1111 flattens img2img inputs."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        base = Image.new("RGBA", image.size, background)
        return Image.alpha_composite(base, image).convert("RGB")
    return image.convert("RGB")


def editor_parts(value: Any) -> tuple[Optional[Image.Image], Optional[Image.Image], Optional[Image.Image]]:
    """(background, mask drawn on the layers, composite) from an ImageEditor value."""
    if not value:
        return None, None, None
    if isinstance(value, Image.Image):
        return value, None, value
    background = value.get("background")
    composite = value.get("composite")
    layers = [layer for layer in (value.get("layers") or []) if layer is not None]
    mask = None
    if layers:
        mask = image_ops.mask_from_layers(layers, (background or composite or layers[0]).size)
    return background, mask, composite


def _require(image: Optional[Image.Image], what: str) -> Image.Image:
    if image is None:
        raise ValueError(what)
    return image


def check_size(image: Optional[Image.Image], label: str, limit: int) -> None:
    """The API's pixel limit (setting max_image_pixels) for the tab's inputs, with a clear message.
    gradio has decoded the upload already; this still keeps it out of the job."""
    if image is None:
        return
    try:
        image_ops.check_pixels(image, limit)
    except image_ops.ImageTooLargeError as err:
        raise ValueError(f"{label}: {err}") from None


def inpaint_options(values: dict, inpaint: InpaintControls, mask: Image.Image) -> InpaintOptions:
    return InpaintOptions(mask=mask, mask_blur=params.as_int(values[inpaint.mask_blur], 4),
                          masked_content=MaskedContent(values[inpaint.masked_content]),
                          inpaint_area=InpaintArea(values[inpaint.inpaint_area]),
                          only_masked_padding=params.as_int(values[inpaint.padding], 32),
                          invert_mask=values[inpaint.mask_mode] == MASK_MODES[1])


def _open_checked(path: Path, limit: int) -> Image.Image:
    """A batch file, refused from its header (before decoding) when over the pixel limit."""
    try:
        return image_ops.open_image(path, limit)
    except image_ops.ImageTooLargeError as err:
        raise ValueError(f"Batch: {path.name}: {err}") from None


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _find_mask(mask_dir: Path, image_path: Path) -> Optional[Path]:
    for candidate in _list_images(mask_dir):
        if candidate.stem == image_path.stem:
            return candidate
    return None


def _batch_saver(out_dir: Path, source: Path):
    def save(result: GenerationResult) -> str:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for i, image in enumerate(result.images):
            name = f"{source.stem}.png" if len(result.images) == 1 else f"{source.stem}-{i}.png"
            text = result.infotexts[i] if i < len(result.infotexts) else ""
            written.append(write_bytes_atomic(out_dir / name, encode_png(image, text)))
        result.saved_paths = [str(p) for p in written]  # the gallery then shows the batch's files
        return ""

    return save


def _wire(env: UiEnv, tab: Img2ImgTab, quick: Quicksettings) -> None:
    def plan(values: dict) -> list[output_panel.JobStep]:
        fields = common_fields(env, values, tab.toprow, tab.sampler, tab.size, tab.batch, tab.seed, quick)
        fields.update(denoising_strength=float(values[tab.denoising_strength]),
                      resize_mode=ResizeMode(values[tab.resize_mode]),
                      extensions=tab.extensions.request_args(values), **tab.features.request_fields(values),
                      script=tab.scripts.request_call(values) if tab.scripts else None)
        mode = values[tab.mode] or "img2img"
        limit = env.ctx.settings.get().max_image_pixels
        if mode == "img2img":
            image = _require(values[tab.init_img], "Upload an image in the img2img tab first.")
            check_size(image, "Image for img2img", limit)
            return [output_panel.JobStep(GenerationRequest(mode=Mode.IMG2IMG, init_images=(flatten(image),),
                                                           **fields))]
        if mode == "sketch":
            background, _mask, composite = editor_parts(values[tab.sketch])
            image = _require(composite or background, "Upload or draw an image in the Sketch tab first.")
            check_size(image, "Sketch", limit)
            return [output_panel.JobStep(GenerationRequest(mode=Mode.IMG2IMG, init_images=(flatten(image),),
                                                           **fields))]
        if mode == "inpaint":
            background, mask, _composite = editor_parts(values[tab.inpaint_editor])
            background = _require(background, "Upload an image in the Inpaint tab first.")
            mask = _require(mask, "Draw a mask over the part of the image to repaint (Inpaint tab).")
            check_size(background, "Image for inpainting", limit)
            return [output_panel.JobStep(GenerationRequest(
                mode=Mode.INPAINT, init_images=(flatten(background),),
                inpaint=inpaint_options(values, tab.inpaint, mask), **fields))]
        if mode == "inpaint_upload":
            image = _require(values[tab.inpaint_image], "Upload an image in the Inpaint upload tab first.")
            mask = _require(values[tab.inpaint_mask], "Upload a mask image in the Inpaint upload tab.")
            check_size(image, "Inpaint upload image", limit)
            check_size(mask, "Inpaint upload mask", limit)
            return [output_panel.JobStep(GenerationRequest(
                mode=Mode.INPAINT, init_images=(flatten(image),),
                inpaint=inpaint_options(values, tab.inpaint, image_ops.mask_channel(mask)), **fields))]
        return batch_plan(values, fields, limit)

    def batch_plan(values: dict, fields: dict, limit: int) -> list[output_panel.JobStep]:
        in_text = (values[tab.batch_input_dir] or "").strip()
        if not in_text:
            raise ValueError("Batch: enter an input directory.")
        in_dir = Path(in_text).expanduser()
        if not in_dir.is_dir():
            raise ValueError(f"Batch: input directory {in_dir} does not exist.")
        out_text = (values[tab.batch_output_dir] or "").strip()
        out_dir = Path(out_text).expanduser() if out_text else None
        mask_text = (values[tab.batch_mask_dir] or "").strip()
        mask_dir = Path(mask_text).expanduser() if mask_text else None
        if mask_dir is not None and not mask_dir.is_dir():
            raise ValueError(f"Batch: inpaint mask directory {mask_dir} does not exist.")
        files = _list_images(in_dir)
        steps = []
        for n, path in enumerate(files):
            with _open_checked(path, limit) as img:
                image = flatten(ImageOps.exif_transpose(img))
            extra: dict[str, Any] = {"mode": Mode.IMG2IMG}
            if mask_dir is not None:
                mask_path = _find_mask(mask_dir, path)
                if mask_path is None:
                    raise ValueError(f"Batch: no mask named {path.stem}.* in {mask_dir}.")
                with _open_checked(mask_path, limit) as m:
                    mask = image_ops.mask_channel(m)
                extra = {"mode": Mode.INPAINT, "inpaint": inpaint_options(values, tab.inpaint, mask)}
            request = GenerationRequest(init_images=(image,), save_images=out_dir is None, **extra, **fields)
            steps.append(output_panel.JobStep(request, label=f"Image {n + 1}/{len(files)}: {path.name}",
                                              after=_batch_saver(out_dir, path) if out_dir else None))
        return steps

    inputs = {tab.toprow.prompt, tab.toprow.negative_prompt, tab.toprow.styles, tab.sampler.sampler,
              tab.sampler.scheduler, tab.sampler.steps, tab.size.width, tab.size.height, tab.batch.batch_count,
              tab.batch.batch_size, tab.batch.cfg_scale, quick.checkpoint, quick.vae, quick.clip_skip, tab.mode,
              tab.init_img, tab.sketch, tab.inpaint_editor, tab.inpaint_image, tab.inpaint_mask,
              tab.batch_input_dir, tab.batch_output_dir, tab.batch_mask_dir, tab.resize_mode,
              tab.inpaint.mask_blur, tab.inpaint.mask_mode, tab.inpaint.masked_content, tab.inpaint.inpaint_area,
              tab.inpaint.padding, tab.denoising_strength, *params.seed_inputs(tab.seed), *tab.extensions.inputs(),
              *tab.features.inputs(), *(tab.scripts.inputs() if tab.scripts else ())}
    output_panel.wire_generation(env, tab.panel, tab.toprow, plan, inputs)
    tab.seed.reuse_seed.click(output_panel.reuse_seed_handler("seed"), [tab.panel.shown, tab.panel.selected],
                              tab.seed.seed, show_progress="hidden")
    tab.seed.reuse_subseed.click(output_panel.reuse_seed_handler("subseed"), [tab.panel.shown, tab.panel.selected],
                                 tab.seed.subseed, show_progress="hidden")
