"""The Extras tab in a real browser: upload and scale by 2 with Lanczos; send a txt2img result (and
a PNG Info image) to Extras, whose saved result keeps the generation parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.ui import helpers as h
from tests.ui.conftest import shot, wait_until

pytestmark = pytest.mark.slow  # browser runs; still part of the default suite and CI


def run_extras(page, expected_info: str) -> str:
    """Click Generate in Extras and wait for this run's log, then for its info text (the two
    components are re-rendered one after the other); returns the info text."""
    before = page.locator("#html_log_extras").first.inner_html()
    page.locator("#extras_generate").click()
    page.wait_for_function(
        "([before]) => { const el = document.getElementById('html_log_extras');"
        " return el && el.innerHTML !== before && el.innerText.includes('Time taken'); }",
        arg=[before], timeout=h.GENERATE_TIMEOUT_MS)
    info = page.locator("#html_info_extras").first
    wait_until(lambda: expected_info in info.inner_text(), 15, what=f"info text {expected_info!r}")
    return info.inner_text()


def result_of_size(page, size: tuple[int, int]) -> Image.Image:
    """The gallery's first image once it is this run's (of `size`)."""
    found = []
    wait_until(lambda: found.append(h.first_gallery_image(page, "extras")) or found[-1].size == size, 15,
               what=f"a {size} result in the gallery")
    return found[-1]


def saved_extras(server) -> list[Path]:
    folder = server.data_dir / "outputs" / "extras-images"
    return sorted(folder.glob("*.png")) if folder.exists() else []


def test_upload_and_scale_by_2_with_lanczos(page, server, tmp_path):
    source = Image.new("RGB", (40, 30), (20, 40, 200))
    ImageDraw.Draw(source).ellipse((8, 6, 32, 24), fill=(220, 30, 30))
    source.save(tmp_path / "source.png")
    before = saved_extras(server)

    h.tab(page, "Extras")
    h.upload(page, "extras_image", tmp_path / "source.png")
    page.locator("#extras_image img").first.wait_for(timeout=15_000)
    h.set_number(page, "extras_upscaling_resize", 2)
    h.choose(page, "extras_upscaler_1", "Lanczos")
    run_extras(page, "Postprocess upscale by: 2, Postprocess upscaler: Lanczos")
    result = result_of_size(page, (80, 60))
    expected = np.asarray(source.resize((80, 60), Image.Resampling.LANCZOS), dtype=np.int16)
    assert np.abs(np.asarray(result.convert("RGB"), dtype=np.int16) - expected).max() == 0
    saved = [p for p in saved_extras(server) if p not in before]
    assert len(saved) == 1 and Image.open(saved[0]).size == (80, 60)
    shot(page, "extras_scaled_by_2")


def test_send_txt2img_result_to_extras(page, server):
    h.fill(page, "txt2img_prompt", "a yellow star")
    h.set_number(page, "txt2img_steps", 3)
    h.set_number(page, "txt2img_width", 64)
    h.set_number(page, "txt2img_height", 64)
    h.set_number(page, "txt2img_seed", 31)
    h.generate(page)
    page.locator("#txt2img_send_to_extras").click()
    page.locator("#extras_image img").first.wait_for(timeout=15_000)
    wait_until(lambda: page.locator("#extras_generate").is_visible(), 15, what="the Extras tab")
    before = saved_extras(server)
    h.choose(page, "extras_upscaler_1", "Nearest")
    h.set_number(page, "extras_upscaling_resize", 2)
    run_extras(page, "Postprocess upscale by: 2, Postprocess upscaler: Nearest")
    result_of_size(page, (128, 128))
    saved = [p for p in saved_extras(server) if p not in before]
    assert len(saved) == 1
    with Image.open(saved[0]) as file:  # the generation's parameters travelled with the image
        assert file.size == (128, 128)
        assert "a yellow star" in file.info["parameters"] and "Seed: 31" in file.info["parameters"]
        assert "Postprocess upscale by: 2" in file.info["extras"]

    # PNG Info -> Extras with the saved file
    h.tab(page, "PNG Info")
    h.upload(page, "pnginfo_image", saved[0])
    page.locator("#pnginfo_html").get_by_text("Seed: 31", exact=False).wait_for(timeout=15_000)
    page.locator("#pnginfo_send_extras").click()
    page.locator("#extras_image img").first.wait_for(timeout=15_000)
    h.set_number(page, "extras_upscaling_resize", 1.5)
    run_extras(page, "Postprocess upscale by: 1.5, Postprocess upscaler: Nearest")
    result_of_size(page, (192, 192))  # the 128x128 file saved above
