"""Issue 18's settings in a real browser: the Settings tab shows the live preview method
(`show_progress_type`) and the VAE memory modes (`vae_tiling`, `vae_slicing`); a method chosen
there is saved, and the next job's live preview (a real picture) shows while it runs.

(test_webui.py's interrupt test also waits for a preview, at the default period and method.)
"""

from __future__ import annotations

import json

import pytest

from tests.ui import helpers as h
from tests.ui.test_webui import fill_long_job, start_long_job

pytestmark = pytest.mark.slow
METHODS = ("Full", "Approx NN", "Approx cheap", "TAESD")


def radio_checked(page, name: str, value: str) -> bool:
    return page.locator(f"#setting_{name} input[value='{value}']").is_checked()


def test_settings_tab_lists_the_preview_method_and_vae_memory_modes(page, server):
    h.tab(page, "Settings")
    h.tab(page, "Stable Diffusion")
    for name in ("vae_tiling", "vae_slicing"):
        box = page.locator(f"#setting_{name} input[type=checkbox]")
        assert box.count() == 1 and box.is_visible() and not box.is_checked()
    assert "VAE tiling" in page.locator("#setting_vae_tiling").inner_text()
    assert "VAE slicing" in page.locator("#setting_vae_slicing").inner_text()
    h.tab(page, "Live previews")
    for method in METHODS:
        assert page.locator(f"#setting_show_progress_type input[value='{method}']").count() == 1
    assert radio_checked(page, "show_progress_type", "Approx NN")  # A1111's default
    assert "Live preview method" in page.locator("#setting_show_progress_type").inner_text()


def test_preview_method_set_in_the_ui_drives_the_next_jobs_preview(page, server):
    settings = server.ctx.settings
    before = settings.get()
    try:
        h.tab(page, "Settings")
        h.tab(page, "Live previews")
        h.set_number(page, "setting_show_progress_every_n_steps", 1)
        page.locator("#setting_show_progress_type").get_by_text("Approx cheap", exact=True).click()
        page.locator("#settings_submit").click()
        page.locator("#settings_result").get_by_text("2 settings changed", exact=False).wait_for(timeout=15_000)
        assert (settings.get().show_progress_type, settings.get().show_progress_every_n_steps) == ("Approx cheap", 1)
        if settings.path is not None:
            assert json.loads(settings.path.read_text())["show_progress_type"] == "Approx cheap"

        h.tab(page, "txt2img")
        fill_long_job(page, "a red circle", batch_count=20)
        running, before_log = start_long_job(page, server)
        assert running.control.preview_every == 1
        preview = page.locator("#txt2img_preview img").first
        preview.wait_for(timeout=60_000)
        image = h.fetch_image(page, preview.get_attribute("src")).convert("RGB")
        assert image.size == (64, 64) and len(set(image.getdata())) > 1  # a picture of the job, not a blank
        page.locator("#txt2img_interrupt").click()
        h.wait_finished(page, "txt2img", before_log, timeout_ms=60_000)
        assert running.control.interrupted
    finally:
        settings.update({"show_progress_type": before.show_progress_type,
                         "show_progress_every_n_steps": before.show_progress_every_n_steps})
