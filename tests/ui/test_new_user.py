"""What a new user meets: tool-button tooltips and icons, the inpaint brush on a small picture, and
the img2img source shown as large as the output."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.ui import helpers as h
from tests.ui.conftest import reload_page, shot, wait_until

SMALL = 64
pytestmark = pytest.mark.slow


def title(page, elem_id: str) -> str:
    wait_until(lambda: page.locator(f"#{elem_id}").first.get_attribute("title"), 15, what=f"{elem_id} title")
    return page.locator(f"#{elem_id}").first.get_attribute("title")


def test_seed_buttons_have_their_own_tooltips(page):
    page.locator("#txt2img_subseed_show input").click()
    page.locator("#txt2img_random_subseed").wait_for(state="visible", timeout=15_000)
    main_dice, variation_dice = title(page, "txt2img_random_seed"), title(page, "txt2img_random_subseed")
    main_reuse, variation_reuse = title(page, "txt2img_reuse_seed"), title(page, "txt2img_reuse_subseed")
    assert main_dice.startswith("Set seed to -1") and "variation" not in main_dice
    assert variation_dice == "Set variation seed to -1 (random)"
    assert main_reuse.startswith("Reuse seed from last generation") and "variation" not in main_reuse
    assert variation_reuse == "Reuse variation seed from last generation"
    page.locator("#txt2img_random_seed").hover()  # the browser shows the title as the tooltip
    assert page.locator("#txt2img_random_seed").get_attribute("aria-label") == main_dice


def test_tool_buttons_draw_svg_icons_without_an_emoji_font(page):
    buttons = page.locator("#tab_txt2img button.tool")
    assert buttons.count() >= 10
    for i in range(buttons.count()):
        button = buttons.nth(i)
        if not button.is_visible():
            continue
        icon = button.evaluate("b => { const s = getComputedStyle(b, '::before');"
                               " return {mask: s.maskImage || s.webkitMaskImage, w: parseFloat(s.width),"
                               " h: parseFloat(s.height), text: b.textContent.trim()}; }")
        assert "data:image/svg+xml" in icon["mask"], button.get_attribute("id")
        assert icon["w"] >= 12 and icon["h"] >= 12 and icon["text"] == "", icon
    # the icon really draws: the button's middle has dark strokes on its light face
    png = page.locator("#txt2img_random_seed").screenshot()
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)
    middle = grey[grey.shape[0] // 4: -grey.shape[0] // 4, grey.shape[1] // 4: -grey.shape[1] // 4]
    assert middle.min() < 100 and middle.max() > 180, (middle.min(), middle.max())
    assert (middle < 100).mean() > 0.05


def test_img2img_source_shows_as_large_as_the_output(page, tmp_path):
    Image.new("RGB", (SMALL, SMALL), (40, 40, 160)).save(tmp_path / "blue.png")
    h.tab(page, "img2img")
    h.upload(page, "img2img_image", tmp_path / "blue.png")
    page.locator("#img2img_image img").first.wait_for(timeout=15_000)
    page.wait_for_timeout(500)
    shown = np.asarray(Image.open(io.BytesIO(page.locator("#img2img_image").screenshot())).convert("RGB"),
                       dtype=np.int16)
    blue = (np.abs(shown - np.array([40, 40, 160])).max(axis=2) < 20)
    rows, cols = np.nonzero(blue)
    side = min(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    gallery = page.locator("#img2img_gallery").bounding_box()
    assert side >= 0.7 * min(gallery["width"], gallery["height"]), (side, gallery)


def brush_size_shown(page) -> int:
    """The editor's own brush-size control (opened from its toolbar)."""
    return int(page.locator("#img2maskimg input[type=range]").first.input_value())


def stroke(page, dy: float) -> None:
    box = page.locator("#img2maskimg canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2 + dy
    page.mouse.move(cx - 60, cy)
    page.mouse.down()
    page.mouse.move(cx, cy, steps=5)
    page.mouse.move(cx + 60, cy, steps=5)
    page.mouse.up()
    page.wait_for_timeout(2000)  # the editor hands its layers over a moment after the stroke


def repainted_fraction(page) -> float:
    """Inpaint at strength 1 with a hard mask edge: exactly the masked pixels change."""
    h.generate(page, "img2img")
    out = np.asarray(h.first_gallery_image(page, "img2img").convert("RGB"), dtype=np.int16)
    return float((np.abs(out - 128).max(axis=2) > 8).mean())


def paint_one_stroke(page, picture, brush_percent: int, expected_radius: int) -> float:
    """Upload `picture` to Inpaint, set the brush-size slider, draw one stroke, inpaint; the share repainted."""
    h.tab(page, "img2img")
    h.tab(page, "Inpaint")
    page.locator("#img2maskimg canvas").first.wait_for(state="visible", timeout=15_000)
    page.wait_for_timeout(1000)
    h.set_number(page, "img2img_mask_brush_size", brush_percent)
    h.upload(page, "img2maskimg", picture)
    editor = page.locator("#img2maskimg")
    editor.get_by_label("Brush Size").first.click()
    wait_until(lambda: brush_size_shown(page) == expected_radius, 60, interval=0.5, what="the brush sized to the picture")
    editor.get_by_label("Brush", exact=True).first.click()
    stroke(page, 0)
    shot(page, f"inpaint_brush_{brush_percent}")
    h.fill(page, "img2img_prompt", "x")
    h.set_number(page, "img2img_steps", 3)
    h.set_number(page, "img2img_width", SMALL)
    h.set_number(page, "img2img_height", SMALL)
    h.set_number(page, "img2img_mask_blur", 0)
    h.set_number(page, "img2img_denoising_strength", 1)
    return repainted_fraction(page)


def test_inpaint_brush_is_sized_to_the_picture(page, tmp_path):
    Image.new("RGB", (SMALL, SMALL), (128, 128, 128)).save(tmp_path / "grey.png")
    # the default 5 % of 64 px is a 3 px radius (gradio's own default is 25 px whatever the picture)
    thin = paint_one_stroke(page, tmp_path / "grey.png", 5, 3)
    assert 0 < thin < 0.25, thin
    reload_page(page)
    page.wait_for_timeout(700)
    wide = paint_one_stroke(page, tmp_path / "grey.png", 30, 19)  # the slider: 30 % is 19 px
    assert wide > 3 * thin, (thin, wide)
