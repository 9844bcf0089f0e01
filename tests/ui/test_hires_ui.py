"""The "Hires. fix" accordion in a real browser: opening it switches hires on, the size label, the
output size, and PNG Info's send-to filling the accordion back so the job regenerates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ui import helpers as h
from tests.ui.conftest import shot, wait_until

pytestmark = pytest.mark.slow


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def checked(page, elem_id: str) -> bool:
    return page.locator(f"#{elem_id} input[type=checkbox]").first.is_checked()


def test_hires_accordion_generates_at_the_target_size(page):
    h.fill(page, "txt2img_prompt", "a red circle on a blue background")
    h.set_number(page, "txt2img_steps", 3)
    h.set_number(page, "txt2img_width", 64)
    h.set_number(page, "txt2img_height", 64)
    page.locator("#txt2img_hr").get_by_text("Hires. fix").first.click()  # open = on, as A1111
    wait_until(lambda: checked(page, "txt2img_enable_hr"), 15, what="opening the accordion to enable hires")
    for elem_id in ("txt2img_hr_upscaler", "txt2img_hires_steps", "txt2img_denoising_strength",
                    "txt2img_hr_scale", "txt2img_hr_resize_x", "txt2img_hr_resize_y", "hr_sampler", "hr_scheduler",
                    "txt2img_hr_cfg", "hires_prompt", "hires_neg_prompt"):
        assert page.locator(f"#{elem_id}").count() == 1, elem_id
    h.set_number(page, "txt2img_hr_scale", 2)
    h.set_number(page, "txt2img_hires_steps", 2)
    label = page.locator("#txt2img_hr_finalres")
    wait_until(lambda: "from 64x64 to 128x128" in label.inner_text(), 15, what="the resolution label")
    shot(page, "hires_accordion")

    info = h.generate(page)
    assert "Hires upscale: 2" in info and "Hires steps: 2" in info and "Size: 64x64" in info
    assert h.first_gallery_image(page, "txt2img").size == (128, 128)


def test_png_info_fills_the_hires_accordion_and_regenerates(page, server):
    from modules.generation.request import GenerationRequest, HiresOptions

    result = server.ctx.queue.run(GenerationRequest(
        prompt="a tiny house", seed=321, steps=3, sampler_name="Euler a", width=64, height=64,
        denoising_strength=0.6, hires=HiresOptions(resize_x=96, resize_y=80, second_pass_steps=2,
                                                   upscaler="Latent (nearest)", prompt="a tiny house, detailed")))
    path = Path(result.saved_paths[0])
    assert Image.open(path).size == (96, 80)

    h.tab(page, "PNG Info")
    h.upload(page, "pnginfo_image", path)
    page.locator("#pnginfo_html").get_by_text("Hires resize: 96x80", exact=False).wait_for(timeout=15_000)
    page.locator("#pnginfo_send_txt2img").click()
    page.locator("#txt2img_prompt textarea").wait_for(state="visible")
    wait_until(lambda: checked(page, "txt2img_enable_hr"), 15, what="hires switched on by the paste")
    assert h.number(page, "txt2img_hr_resize_x") == 96 and h.number(page, "txt2img_hr_resize_y") == 80
    assert h.number(page, "txt2img_hires_steps") == 2
    assert h.number(page, "txt2img_denoising_strength") == 0.6
    assert h.dropdown_value(page, "txt2img_hr_upscaler") == "Latent (nearest)"
    assert h.textbox(page, "hires_prompt") == "a tiny house, detailed"

    info = h.generate(page)
    assert "Hires resize: 96x80" in info
    again = h.first_gallery_image(page, "txt2img")
    assert again.size == (96, 80)
    assert np.array_equal(pixels(again), pixels(Image.open(path)))
