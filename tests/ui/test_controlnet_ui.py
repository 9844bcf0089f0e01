"""The ControlNet panel in a real browser on the real app (embedded shapes64 model): a silhouette
uploaded to unit 0, the preprocessor previewed (its pixels are the module's own output), a
ControlNet file dropped into models/ControlNet found by the refresh button, a generation whose
gallery holds the image and the detected map and whose infotext names `ControlNet 0`, and that
infotext pasted back restoring unit 0's fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.ui import helpers as h
from tests.ui.conftest import PageLog, open_page, shot, wait_until

UNIT0 = "txt2img_controlnet_ControlNet-0"
EMBEDDED_UNET = Path(__file__).resolve().parents[2] / "models" / "embedded" / "shapes64" / "unet"
CONTROLNET_NAME = "control_ui_test_shapes64"
INVERT_LABEL = "invert (from white bg & black line)"  # sd-webui-controlnet's label of module "invert"


def controlnet_extension(server):
    from webui.loaded_extensions import loaded_extensions

    ext = loaded_extensions(server.ctx).extension_set.find("controlnet")
    assert ext is not None, "the built-in ControlNet extension is not loaded"
    return ext


def write_random_controlnet(folder: Path) -> None:
    """A random-weight diffusers ControlNet that fits the embedded UNet (a new file for the refresh)."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(EMBEDDED_UNET))
    ControlNetModel.from_unet(unet).save_pretrained(folder)


def black_shape_on_white(path: Path) -> Path:
    """A black disc on white, 64x64: what `invert` turns into the white-on-black silhouette."""
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).ellipse((18, 14, 46, 42), fill="black")
    img.save(path)
    return path


def checked(page, elem_id: str) -> bool:
    return page.locator(f"#{elem_id} input[type=checkbox]").first.is_checked()


def radio_value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input[type=radio]:checked").first.get_attribute("value") or ""


def gallery_srcs(page, tab_name: str) -> list[str]:
    """The distinct pictures of the gallery (its thumbnails)."""
    srcs = page.locator(f"#{tab_name}_gallery .thumbnail-item img").evaluate_all("els => els.map(e => e.src)")
    return list(dict.fromkeys(srcs))


def test_unit_preview_generate_and_paste(page, browser, server, tmp_path):
    from controlnet_ext.detect import rgb_array
    from controlnet_ext.preprocessors import PreprocessInput

    ext = controlnet_extension(server)
    source = black_shape_on_white(tmp_path / "disc.png")
    write_random_controlnet(server.data_dir / "models" / "ControlNet" / CONTROLNET_NAME)

    h.fill(page, "txt2img_prompt", "a white circle")
    h.set_number(page, "txt2img_steps", 3)
    h.set_number(page, "txt2img_width", 64)
    h.set_number(page, "txt2img_height", 64)
    page.locator("#txt2img_ext_controlnet").get_by_text("ControlNet").first.click()
    for index in range(3):  # the units as tabs (rendered once the accordion opens)
        page.get_by_role("tab", name=f"ControlNet Unit {index}", exact=True).wait_for(timeout=15_000)

    # upload, pick the preprocessor, preview: the shown map is the module's own output
    h.upload(page, f"{UNIT0}_input_image", source)
    page.locator(f"#{UNIT0}_input_image img").first.wait_for(timeout=15_000)
    h.choose(page, f"{UNIT0}_controlnet_preprocessor_dropdown", INVERT_LABEL)
    page.locator(f"#{UNIT0}_controlnet_trigger_preprocessor").click()
    preview = page.locator(f"#{UNIT0}_generated_image img").first
    preview.wait_for(timeout=60_000)
    shown = np.asarray(h.fetch_image(page, preview.get_attribute("src")).convert("RGB"))
    expected = ext.preprocessors.run("invert", PreprocessInput(  # -1: the module's defaults, as the sliders
        image=rgb_array(Image.open(source)), resolution=-1, threshold_a=-1, threshold_b=-1)).image
    assert shown.shape == expected.shape and np.array_equal(shown, expected)

    # the new file appears after the refresh button; every listed file is offered
    model_dropdown = f"{UNIT0}_controlnet_model_dropdown"
    page.locator(f"#{UNIT0}_controlnet_refresh_models").click()
    wait_until(lambda: any(f.name == CONTROLNET_NAME for f in ext.library.files), 15, what="the refresh's rescan")
    title = next(f.title for f in ext.library.files if f.name == CONTROLNET_NAME)
    page.locator(f"#{model_dropdown} input").first.click()
    offered = [t.replace("✓", "").strip() for t in page.get_by_role("option").all_inner_texts()]
    assert "None" in offered and all(f.title in offered for f in ext.library.files), offered
    page.get_by_role("option", name=title, exact=True).first.click()
    h.set_number(page, f"{UNIT0}_controlnet_control_weight_slider", 0.8)
    h.set_number(page, f"{UNIT0}_controlnet_ending_control_step_slider", 0.9)
    page.locator(f"#{UNIT0}_controlnet_enable_checkbox input[type=checkbox]").check()
    shot(page, "controlnet_unit_ready")

    info = h.generate(page)
    assert "ControlNet 0" in info, info
    assert "Module: invert" in info and f"Model: {title}" in info and "Weight: 0.8" in info, info
    srcs = gallery_srcs(page, "txt2img")
    assert len(srcs) == 2, srcs  # the generation, then the detected map
    generated, detected = (np.asarray(h.fetch_image(page, s).convert("L")) for s in srcs)
    assert generated.shape == (64, 64)
    # the map is the white disc on black (sampled well inside and well outside the disc)
    y, x = detected.shape[0] * 28 // 64, detected.shape[1] * 32 // 64
    assert detected[y, x] > 200 and detected[2, 2] < 50
    shot(page, "controlnet_generated")

    # a fresh page: the pasted infotext restores unit 0
    log = PageLog()
    fresh = open_page(browser, server.url, log)
    try:
        h.fill(fresh, "txt2img_prompt", info)
        fresh.locator("#txt2img_paste").click()
        fresh.locator("#txt2img_ext_controlnet").get_by_text("ControlNet").first.click()
        wait_until(lambda: checked(fresh, f"{UNIT0}_controlnet_enable_checkbox"), 15,
                   what="unit 0 switched on by the paste")
        assert h.dropdown_value(fresh, f"{UNIT0}_controlnet_preprocessor_dropdown") == INVERT_LABEL
        assert h.dropdown_value(fresh, model_dropdown) == title
        assert h.number(fresh, f"{UNIT0}_controlnet_control_weight_slider") == 0.8
        assert h.number(fresh, f"{UNIT0}_controlnet_ending_control_step_slider") == 0.9
        assert h.number(fresh, f"{UNIT0}_controlnet_start_control_step_slider") == 0.0
        assert radio_value(fresh, f"{UNIT0}_controlnet_control_mode_radio") == "Balanced"
        assert radio_value(fresh, f"{UNIT0}_controlnet_resize_mode_radio") == "Crop and Resize"
        shot(fresh, "controlnet_pasted")
        fresh.get_by_role("tab", name="ControlNet Unit 1", exact=True).click()  # not in the infotext: off
        assert not checked(fresh, "txt2img_controlnet_ControlNet-1_controlnet_enable_checkbox")
    finally:
        fresh.context.close()
    log.check()


def test_img2img_unit_notes_and_inpaint_mask(page):
    prefix = "img2img_controlnet_ControlNet-0"
    h.tab(page, "img2img")
    page.locator("#img2img_ext_controlnet").get_by_text("ControlNet").first.click()
    note = page.locator(f"#{prefix}_img2img_input_note")
    note.wait_for(state="visible", timeout=15_000)
    assert "img2img input" in note.inner_text()

    # a module without its weights: marked, and picking it says which file to put where
    h.choose(page, f"{prefix}_controlnet_preprocessor_dropdown", "softedge_hed (unavailable)")
    module_note = page.locator(f"#{prefix}_controlnet_module_note")
    wait_until(lambda: "ControlNetHED.pth" in module_note.inner_text(), 15, what="the missing-file note")
    assert "ControlNet-annotators" in module_note.inner_text()
    # inpaint_only takes a mask of its own
    assert not page.locator(f"#{prefix}_mask_image").is_visible()
    h.choose(page, f"{prefix}_controlnet_preprocessor_dropdown", "inpaint_only")
    page.locator(f"#{prefix}_mask_image").wait_for(state="visible", timeout=15_000)
    assert not module_note.is_visible()
    shot(page, "controlnet_img2img_unit")

    page.get_by_role("tab", name="ControlNet Unit 2", exact=True).click()
    page.locator("#img2img_controlnet_ControlNet-2_input_image").wait_for(timeout=15_000)
