"""The "Restore faces" and "Tiling" checkboxes in a real browser: ticking Tiling reaches the engine
(the infotext says "Tiling: True"), pasting an infotext sets both boxes, and the Settings tab shows
the postprocessing options."""

from __future__ import annotations

import pytest

from tests.ui import helpers as h

SMALL = 64
pytestmark = pytest.mark.slow


def checked(page, elem_id: str) -> bool:
    return page.locator(f"#{elem_id} input[type=checkbox]").is_checked()


def test_tiling_checkbox_reaches_the_job_and_paste_sets_the_boxes(page):
    for tab in ("txt2img", "img2img"):
        h.tab(page, tab)
        assert not checked(page, f"{tab}_restore_faces") and not checked(page, f"{tab}_tiling")
    h.tab(page, "txt2img")
    h.fill(page, "txt2img_prompt", "a red circle")
    h.set_number(page, "txt2img_steps", 3)
    h.set_number(page, "txt2img_width", SMALL)
    h.set_number(page, "txt2img_height", SMALL)
    page.locator("#txt2img_tiling input[type=checkbox]").check()
    info = h.generate(page)
    assert "Tiling: True" in info and "Face restoration" not in info

    page.locator("#txt2img_tiling input[type=checkbox]").uncheck()
    # the paste button (↙️) reads the prompt box: an A1111 infotext with both keys
    h.fill(page, "txt2img_prompt", "a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, "
                                   "Face restoration: CodeFormer, Size: 64x64, Tiling: True")
    page.locator("#txt2img_paste").click()
    page.wait_for_function("() => document.querySelector('#txt2img_restore_faces input').checked", timeout=15_000)
    assert checked(page, "txt2img_tiling")
    assert h.textbox(page, "txt2img_prompt") == "a cat"


def test_settings_tab_lists_the_postprocessing_options(page):
    h.tab(page, "Settings")
    h.tab(page, "Postprocessing")
    for name in ("face_restoration", "tiling", "filter_nsfw", "add_invisible_watermark"):
        assert page.locator(f"#setting_{name}").count() == 1
