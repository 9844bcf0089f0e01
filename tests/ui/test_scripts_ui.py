"""The Script dropdown in a real browser: choose X/Y/Z plot, set two axes, generate, get the
labelled grid first in the gallery with the plot's infotext."""

from __future__ import annotations

import pytest

from tests.ui import helpers as h
from tests.ui.conftest import shot, wait_until

pytestmark = pytest.mark.slow


def test_xyz_plot_from_the_script_dropdown(page):
    h.fill(page, "txt2img_prompt", "a red circle on a blue background")
    h.set_number(page, "txt2img_steps", 2)
    h.set_number(page, "txt2img_width", 64)
    h.set_number(page, "txt2img_height", 64)
    controls = page.locator("#script_txt2img_xyz_grid")
    assert not controls.is_visible()
    h.choose(page, "txt2img_script_dropdown", "X/Y/Z plot")
    wait_until(controls.is_visible, 15, what="the X/Y/Z plot controls")
    h.choose(page, "script_txt2img_xyz_x_type", "Steps")
    h.fill(page, "script_txt2img_xyz_x_values", "1-2")
    h.choose(page, "script_txt2img_xyz_y_type", "CFG Scale")
    h.fill(page, "script_txt2img_xyz_y_values", "3, 7")
    page.locator("#script_txt2img_xyz_include_lone_images input[type=checkbox]").first.check()
    shot(page, "xyz_plot_controls")

    info = h.generate(page)
    assert "Script: X/Y/Z plot" in info and "X Type: Steps" in info and "Y Type: CFG Scale" in info
    wait_until(lambda: h.gallery_images(page, "txt2img").count() >= 1, 15, what="the gallery")
    grid = h.first_gallery_image(page, "txt2img")
    assert grid.width == 2 * 64 + 48 and grid.height > 2 * 64  # 2x2 cells with the label bands
    assert min(grid.crop((48, 0, grid.width, grid.height - 128)).convert("L").getdata()) < 100  # labels drawn
    assert grid.getpixel((1, 1))[:3] == (255, 255, 255)
