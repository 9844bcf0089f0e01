"""Prompts from file (its upload form fills the textbox) and Outpainting mk2 from the Script
dropdown in a real browser."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from tests.ui import helpers as h
from tests.ui.conftest import shot, wait_until

pytestmark = pytest.mark.slow


def small_settings(page, tab: str) -> None:
    h.set_number(page, f"{tab}_steps", 2)
    h.set_number(page, f"{tab}_width", 64)
    h.set_number(page, f"{tab}_height", 64)


def test_prompts_from_an_uploaded_file(page, tmp_path):
    (tmp_path / "prompts.txt").write_text("a green square\r\n--prompt a yellow star --seed 5 --steps 1\n",
                                          encoding="utf-8")
    h.fill(page, "txt2img_prompt", "")
    small_settings(page, "txt2img")
    h.choose(page, "txt2img_script_dropdown", "Prompts from file or textbox")
    controls = page.locator("#script_txt2img_prompts_from_file_prompt_txt")
    wait_until(controls.is_visible, 15, what="the prompts-from-file controls")
    h.upload(page, "script_txt2img_prompts_from_file_file", tmp_path / "prompts.txt")
    wait_until(lambda: "yellow star" in h.textbox(page, "script_txt2img_prompts_from_file_prompt_txt"), 15,
               what="the file's lines in the textbox")
    assert h.textbox(page, "script_txt2img_prompts_from_file_prompt_txt").startswith("a green square\n--prompt")
    shot(page, "prompts_from_file_controls")
    info = h.generate(page)
    assert "a green square" in info
    wait_until(lambda: h.gallery_images(page, "txt2img").count() >= 2, 15, what="both lines' images")


def test_outpainting_mk2_grows_the_picture(page, tmp_path):
    source = Image.new("RGB", (64, 64), (20, 40, 200))
    ImageDraw.Draw(source).ellipse((16, 16, 48, 48), fill=(200, 30, 30))
    source.save(tmp_path / "source.png")
    h.tab(page, "img2img")
    h.upload(page, "img2img_image", tmp_path / "source.png")
    page.locator("#img2img_image img").first.wait_for(timeout=15_000)
    h.fill(page, "img2img_prompt", "a red circle on a blue background")
    small_settings(page, "img2img")
    h.choose(page, "img2img_script_dropdown", "Outpainting mk2")
    wait_until(page.locator("#script_img2img_outpainting_mk_2_pixels").is_visible, 15, what="the mk2 controls")
    h.set_number(page, "script_img2img_outpainting_mk_2_pixels", 32)
    shot(page, "outpainting_mk2_controls")
    h.generate(page, "img2img")
    wait_until(lambda: h.gallery_images(page, "img2img").count() >= 1, 15, what="the gallery")
    result = h.first_gallery_image(page, "img2img")
    assert result.size == (128, 128)  # 32 px on each of the four sides
    assert result.convert("RGB").crop((32, 32, 96, 96)).tobytes() == source.tobytes()
