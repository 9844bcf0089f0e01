"""The ControlNet panel: unit tabs inside the extension's accordion, laid out as sd-webui-controlnet
lays them out, with its labels and elem_ids (`txt2img_controlnet_ControlNet-0_input_image`,
`..._controlnet_enable_checkbox`, `..._controlnet_preprocessor_dropdown`...).

`build_units(ext, is_img2img)` draws the units and returns their value components, UNIT_FIELDS per
unit, unit after unit; `units_from_values(values)` turns those values back into ControlUnit field
dicts, and `values_from_args(ext, args, count)` fills the components from Args (pasting an
infotext). The Preview button runs the preprocessor through the job queue
(`controlnet_ext.detect.run_detect`), so it never uses the device at the same time as a generation.

gradio is imported here (this module is only imported by the UI); torch never is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import gradio as gr

if TYPE_CHECKING:
    from pydantic import BaseModel

# The value components of one unit, in this order; the names are ControlUnit's fields.
UNIT_FIELDS = ("enabled", "image", "mask", "module", "model", "weight", "resize_mode", "low_vram", "processor_res",
               "threshold_a", "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode",
               "hr_option")
NO_MODEL = "None"
NO_MODULE = "none"
HR_OPTIONS = ("Both", "Low res only", "High res only")
UNAVAILABLE = " (unavailable)"
# The three slider slots when the module shows none (labels as sd-webui-controlnet's).
SLOT_LABELS = ("Preprocessor Resolution", "Threshold A", "Threshold B")
SLOT_DEFAULTS = ((512.0, 64.0, 2048.0, 1.0), (64.0, 64.0, 1024.0, 1.0), (64.0, 64.0, 1024.0, 1.0))


def tab_name(is_img2img: bool) -> str:
    return "img2img" if is_img2img else "txt2img"


def unit_elem_prefix(is_img2img: bool, index: int) -> str:
    """sd-webui-controlnet's `{elem_id_tabname}_{tabname}`: `txt2img_controlnet_ControlNet-0`."""
    return f"{tab_name(is_img2img)}_controlnet_ControlNet-{index}"


def unit_count(ext: Any) -> int:
    """Units shown: the extension's `unit_count` (the control_net_unit_count setting, 1-10)."""
    return ext.unit_count


# ---------------------------------------------------------------------------------------------
# choices and per-module controls


def module_choices(ext: Any) -> list[tuple[str, str]]:
    """(label, module name), with sd-webui-controlnet's UI labels ("invert (from white bg & black
    line)"); modules that cannot run here are marked, still selectable (picking one says which
    file to put where)."""
    pre = ext.preprocessors
    out = []
    for name in pre.names():
        try:
            entry = pre.entry(name)
            usable = pre.available(name) if hasattr(pre, "available") else not pre.missing(name)
            label = entry.label
        except Exception:  # noqa: BLE001 - one odd entry must not hide the others
            usable, label = True, name
        out.append((label if usable else f"{label}{UNAVAILABLE}", name))
    return out


def model_choices(ext: Any) -> list[str]:
    """"None", then every ControlNet file's title (the embedded shapes64 ControlNet included)."""
    try:
        titles = [f.title for f in ext.library.files]
    except Exception:  # noqa: BLE001 - an unreadable folder must not take the panel down
        titles = []
    return [NO_MODEL, *titles]


def model_title(ext: Any, name: Optional[str]) -> Optional[str]:
    """The listed title an infotext's / API's model name means (title or bare name); None if absent."""
    if not name or name == NO_MODEL:
        return NO_MODEL
    try:
        found = ext.library.find(name)
    except Exception:  # noqa: BLE001
        found = None
    return found.title if found is not None else None


def module_note(ext: Any, module: Optional[str]) -> str:
    """Markdown saying why a module cannot run here (the weight files it lacks and where they go,
    detect.unavailable_reason's words, as the API's); "" when it can."""
    from controlnet_ext.detect import unavailable_reason

    try:
        reason = unavailable_reason(ext.preprocessors, ext.preprocessors.entry(module or NO_MODULE))
    except Exception as exc:  # noqa: BLE001 - an unknown module: say so instead of failing
        reason = str(exc)
    return f"⚠️ {reason}" if reason else ""


def _entry_sliders(ext: Any, module: Optional[str]) -> list[Any]:
    """The module's (resolution, threshold A, threshold B) sliders, None where it has none."""
    try:
        entry = ext.preprocessors.entry(module or NO_MODULE)
    except Exception:  # noqa: BLE001 - unknown module: no sliders
        return [None, None, None]
    return [entry.resolution_slider, entry.threshold_a_slider, entry.threshold_b_slider]


def is_inpaint(module: Optional[str]) -> bool:
    return "inpaint" in str(module or "")  # ControlUnit.is_inpaint's rule


def slider_updates(ext: Any, module: Optional[str], pixel_perfect: bool,
                   values: Sequence[Optional[float]] = (None, None, None)) -> list[dict]:
    """gr.update()s for the resolution / threshold A / threshold B sliders of `module`.

    A slot the module has takes its label and range, and `values[i]` (the module's default when
    None or -1, as the API's -1); pixel perfect hides the resolution (it is computed then). A slot
    it lacks is hidden.
    """
    out = []
    for slot, (slider, wanted) in enumerate(zip(_entry_sliders(ext, module), values)):
        if slider is None:  # hidden, back at the panel's start values (no stale value of another module)
            default, low, high, step = SLOT_DEFAULTS[slot]
            out.append(gr.update(label=SLOT_LABELS[slot], minimum=low, maximum=high, step=step, value=default,
                                 visible=False))
            continue
        value = slider.value if wanted is None or float(wanted) < 0 else float(wanted)
        value = min(max(value, slider.min), slider.max)
        visible = not (slot == 0 and pixel_perfect)
        out.append(gr.update(label=slider.name, minimum=slider.min, maximum=slider.max, step=slider.step,
                             value=value, visible=visible, interactive=True))
    return out


def used_slider_values(ext: Any, module: Optional[str], res: Any, a: Any, b: Any) -> tuple[float, float, float]:
    """The sliders' values where the module uses them, -1 (the module's default) where it does not."""
    slots = _entry_sliders(ext, module)
    return tuple(float(v) if s is not None and v is not None else -1.0  # type: ignore[return-value]
                 for s, v in zip(slots, (res, a, b)))


# ---------------------------------------------------------------------------------------------
# one unit


@dataclass
class UnitControls:
    enabled: gr.Checkbox
    image: gr.Image
    mask: gr.Image
    module: gr.Dropdown
    model: gr.Dropdown
    weight: gr.Slider
    resize_mode: gr.Radio
    low_vram: gr.Checkbox
    processor_res: gr.Slider
    threshold_a: gr.Slider
    threshold_b: gr.Slider
    guidance_start: gr.Slider
    guidance_end: gr.Slider
    pixel_perfect: gr.Checkbox
    control_mode: gr.Radio
    hr_option: gr.Radio
    preview: gr.Image
    preview_button: gr.Button
    refresh: gr.Button
    note: gr.Markdown
    img2img_note: Optional[gr.Markdown]

    def values(self) -> list:
        """The value components, in UNIT_FIELDS order."""
        return [getattr(self, name) for name in UNIT_FIELDS]


def _build_unit(ext: Any, is_img2img: bool, index: int) -> UnitControls:
    from controlnet_ext.units import ControlMode, ResizeMode
    from webui.common import tool_button

    p = unit_elem_prefix(is_img2img, index)
    with gr.Row(equal_height=False, elem_classes=["cnet-image-row"]):
        image = gr.Image(label="Image", type="pil", image_mode="RGB", sources=["upload", "clipboard"], height=260,
                         elem_id=f"{p}_input_image", elem_classes=["cnet-image"])
        preview = gr.Image(label="Preprocessor Preview", type="pil", interactive=False, visible=False, format="png",
                           height=260, elem_id=f"{p}_generated_image", elem_classes=["cnet-image"])
    mask_label = "Mask for inpaint (white = the area to inpaint)" + ("; empty: the img2img mask" if is_img2img else "")
    mask = gr.Image(label=mask_label, type="pil",
                    image_mode="L", sources=["upload", "clipboard"], height=200, visible=False,
                    elem_id=f"{p}_mask_image")
    img2img_note = None
    if is_img2img:
        img2img_note = gr.Markdown("No image here: this unit uses the img2img input image.",
                                   elem_id=f"{p}_img2img_input_note", elem_classes=["hint"])
    with gr.Row(elem_classes=["controlnet_main_options"]):
        enabled = gr.Checkbox(label="Enable", value=False, elem_id=f"{p}_controlnet_enable_checkbox",
                              elem_classes=["cnet-unit-enabled"])
        low_vram = gr.Checkbox(label="Low VRAM", value=False, elem_id=f"{p}_controlnet_low_vram_checkbox")
        pixel_perfect = gr.Checkbox(label="Pixel Perfect", value=False,
                                    elem_id=f"{p}_controlnet_pixel_perfect_checkbox")
    with gr.Row(elem_classes=["controlnet_preprocessor_model", "controlnet_row"], equal_height=True):
        module = gr.Dropdown(module_choices(ext), value=NO_MODULE, label="Preprocessor",
                             elem_id=f"{p}_controlnet_preprocessor_dropdown")
        preview_button = gr.Button("Preview", size="sm", scale=0, min_width=80,
                                   elem_id=f"{p}_controlnet_trigger_preprocessor",
                                   elem_classes=["cnet-run-preprocessor"])
        model = gr.Dropdown(model_choices(ext), value=NO_MODEL, label="Model",
                            elem_id=f"{p}_controlnet_model_dropdown")
        refresh = tool_button("🔄", "Refresh the ControlNet model list", f"{p}_controlnet_refresh_models")
    note = gr.Markdown("", visible=False, elem_id=f"{p}_controlnet_module_note", elem_classes=["hint"])
    with gr.Row(elem_classes=["controlnet_weight_steps", "controlnet_row"]):
        weight = gr.Slider(label="Control Weight", minimum=0.0, maximum=2.0, step=0.05, value=1.0,
                           elem_id=f"{p}_controlnet_control_weight_slider")
        guidance_start = gr.Slider(label="Starting Control Step", minimum=0.0, maximum=1.0, step=0.01, value=0.0,
                                   elem_id=f"{p}_controlnet_start_control_step_slider")
        guidance_end = gr.Slider(label="Ending Control Step", minimum=0.0, maximum=1.0, step=0.01, value=1.0,
                                 elem_id=f"{p}_controlnet_ending_control_step_slider")
    with gr.Row(elem_classes=["controlnet_row"]):
        sliders = []
        for slot, suffix in enumerate(("preprocessor_resolution_slider", "threshold_A_slider", "threshold_B_slider")):
            value, low, high, step = SLOT_DEFAULTS[slot]
            sliders.append(gr.Slider(label=SLOT_LABELS[slot], minimum=low, maximum=high, step=step, value=value,
                                     visible=False, elem_id=f"{p}_controlnet_{suffix}"))
    processor_res, threshold_a, threshold_b = sliders
    control_mode = gr.Radio([m.value for m in ControlMode], value=ControlMode.BALANCED.value, label="Control Mode",
                            elem_id=f"{p}_controlnet_control_mode_radio")
    resize_mode = gr.Radio([ResizeMode.RESIZE.value, ResizeMode.CROP.value, ResizeMode.FILL.value],
                           value=ResizeMode.CROP.value, label="Resize Mode",
                           elem_id=f"{p}_controlnet_resize_mode_radio")
    hr_option = gr.Radio(list(HR_OPTIONS), value=HR_OPTIONS[0], label="Hires-Fix Option", visible=not is_img2img,
                         elem_id=f"{p}_controlnet_hr_option_radio")
    unit = UnitControls(enabled, image, mask, module, model, weight, resize_mode, low_vram, processor_res,
                        threshold_a, threshold_b, guidance_start, guidance_end, pixel_perfect, control_mode,
                        hr_option, preview, preview_button, refresh, note, img2img_note)
    _wire_unit(ext, unit)
    return unit


def _wire_unit(ext: Any, unit: UnitControls) -> None:
    sliders = [unit.processor_res, unit.threshold_a, unit.threshold_b]

    # The user picks a module: its sliders with their defaults, the mask for inpaint, the note.
    # `.input` (not `.change`) so values written by pasting an infotext are not reset.
    def on_module(module: str, pixel_perfect: bool):
        note = module_note(ext, module)
        return [*slider_updates(ext, module, pixel_perfect), gr.update(visible=is_inpaint(module)),
                gr.update(value=note, visible=bool(note))]

    unit.module.input(on_module, [unit.module, unit.pixel_perfect], [*sliders, unit.mask, unit.note],
                      show_progress="hidden", api_visibility="private")

    def on_pixel_perfect(module: str, pixel_perfect: bool):
        has_res = _entry_sliders(ext, module)[0] is not None
        return gr.update(visible=has_res and not pixel_perfect)

    unit.pixel_perfect.input(on_pixel_perfect, [unit.module, unit.pixel_perfect], unit.processor_res,
                             show_progress="hidden", api_visibility="private")

    def refresh(current: str):
        try:
            ext.library.refresh()
        except Exception as exc:  # noqa: BLE001
            gr.Warning(f"ControlNet models could not be listed again: {exc}")
        choices = model_choices(ext)
        return gr.update(choices=choices, value=current if current in choices else NO_MODEL)

    unit.refresh.click(refresh, unit.model, unit.model, show_progress="hidden", api_visibility="private")

    if unit.img2img_note is not None:
        unit.image.change(lambda image: gr.update(visible=image is None), unit.image, unit.img2img_note,
                          show_progress="hidden", api_visibility="private")

    def preview(image, mask, module: str, res, a, b):
        if image is None:
            raise gr.Error("Upload an image to this ControlNet unit to preview its preprocessor.")
        from controlnet_ext.detect import DetectRequest, run_detect
        from webui.common import error

        processor_res, threshold_a, threshold_b = used_slider_values(ext, module, res, a, b)
        request = DetectRequest(module=module or NO_MODULE, images=[image.convert("RGB")],
                                masks=[mask if is_inpaint(module) else None],
                                processor_res=int(processor_res), threshold_a=threshold_a, threshold_b=threshold_b)
        try:
            maps = run_detect(ext, request, None)
        except Exception as exc:
            raise error(exc)
        if not maps:
            raise gr.Error("The preview was interrupted.")
        return gr.update(value=maps[0], visible=True)

    unit.preview_button.click(preview, [unit.image, unit.mask, unit.module, *sliders], unit.preview,
                              api_visibility="private")


# ---------------------------------------------------------------------------------------------
# the extension's ui() / args_from_ui() / pasting


def build_units(ext: Any, is_img2img: bool) -> list[Any]:
    """Draw the unit tabs (inside the accordion extension_controls opened); the value components,
    UNIT_FIELDS per unit in order."""
    components: list[Any] = []
    with gr.Tabs(elem_id=f"{tab_name(is_img2img)}_controlnet_tabs", elem_classes=["cnet-unit-tabs"]):
        for index in range(unit_count(ext)):
            with gr.Tab(f"ControlNet Unit {index}", elem_id=f"{unit_elem_prefix(is_img2img, index)}_tab"):
                components += _build_unit(ext, is_img2img, index).values()
    return components


def units_from_values(values: Sequence[Any]) -> list[dict]:
    """The components' values -> one ControlUnit field dict per unit, disabled ones included
    (ControlNetArgs keeps them: infotext numbers units by position)."""
    size = len(UNIT_FIELDS)
    if len(values) % size:
        raise ValueError(f"ControlNet: expected {size} values per unit, got {len(values)} in all")
    units = []
    for start in range(0, len(values), size):
        unit = dict(zip(UNIT_FIELDS, values[start:start + size]))
        unit["enabled"] = bool(unit["enabled"])
        unit["module"] = unit["module"] or NO_MODULE
        unit["model"] = unit["model"] or NO_MODEL
        if not is_inpaint(unit["module"]):
            unit["mask"] = None  # a mask left from an inpaint module must not mask anything else
        units.append(unit)
    return units


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)  # an Enum -> its string, as the radios hold it


def values_from_args(ext: Any, args: "BaseModel", count: int) -> Optional[list[Any]]:
    """Updates for the `count` components build_units returned, from ControlNetArgs (pasting an
    infotext): unit i gets args.units[i]; units beyond them are switched off. Images are kept
    (an infotext holds none)."""
    size = len(UNIT_FIELDS)
    if count <= 0 or count % size:
        return None
    units = list(getattr(args, "units", ()) or ())
    missing_models = []
    out: list[Any] = []
    for index in range(count // size):
        if index >= len(units):
            out += [False] + [gr.skip()] * (size - 1)
            continue
        unit = units[index]
        module = unit.module or NO_MODULE
        title = model_title(ext, unit.model)
        if title is None:
            missing_models.append(str(unit.model))
            title = NO_MODEL
        res, a, b = slider_updates(ext, module, bool(unit.pixel_perfect),
                                   (unit.processor_res, unit.threshold_a, unit.threshold_b))
        by_field = {
            "enabled": bool(unit.enabled), "image": gr.skip(), "mask": gr.update(visible=is_inpaint(module)),
            # the model choices as listed now: the file may have come after this page was built
            "module": module, "model": gr.update(choices=model_choices(ext), value=title),
            "weight": float(unit.weight), "resize_mode": _plain(unit.resize_mode),
            "low_vram": bool(unit.low_vram), "processor_res": res, "threshold_a": a, "threshold_b": b,
            "guidance_start": float(unit.guidance_start), "guidance_end": float(unit.guidance_end),
            "pixel_perfect": bool(unit.pixel_perfect), "control_mode": _plain(unit.control_mode),
            "hr_option": _plain(getattr(unit, "hr_option", HR_OPTIONS[0])),
        }
        out += [by_field[name] for name in UNIT_FIELDS]
    if missing_models:
        gr.Warning("ControlNet model(s) from the parameters are not installed: " + ", ".join(missing_models))
    return out


__all__ = ["UNIT_FIELDS", "UnitControls", "build_units", "units_from_values", "values_from_args", "module_choices",
           "model_choices", "module_note", "slider_updates", "unit_count", "unit_elem_prefix"]
