"""The web UI in a real browser: generate, reuse seed, send-to, inpaint, PNG Info, interrupt,
settings across a restart, keyboard shortcuts, styles, readable errors, no console errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ui import helpers as h
from tests.ui.conftest import PageLog, open_page, reload_page, shot, start_server, wait_until

SMALL = 64
pytestmark = pytest.mark.slow  # browser runs; still part of the default suite and CI


def small_job(page, tab: str = "txt2img", steps: int = 4) -> None:
    h.set_number(page, f"{tab}_steps", steps)
    h.set_number(page, f"{tab}_width", SMALL)
    h.set_number(page, f"{tab}_height", SMALL)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_txt2img_generates_and_reuses_seed(page):
    h.fill(page, "txt2img_prompt", "a red circle on a blue background")
    page.locator("#txt2img_token_counter").get_by_text("7/75").wait_for(timeout=15_000)
    h.fill(page, "txt2img_neg_prompt", "blurry")
    # the size sliders start at the model's native size (the embedded model: 64)
    assert h.number(page, "txt2img_width") == SMALL and h.number(page, "txt2img_height") == SMALL
    small_job(page)
    assert h.number(page, "txt2img_seed") == -1

    info = h.generate(page)
    assert "a red circle on a blue background" in info
    assert "Negative prompt: blurry" in info
    assert "Steps: 4" in info and f"Size: {SMALL}x{SMALL}" in info
    seed = h.seed_from_info(info)
    first = h.first_gallery_image(page, "txt2img")
    assert first.size == (SMALL, SMALL)
    assert "Time taken" in page.locator("#html_log_txt2img").inner_text()
    shot(page, "txt2img_generated")

    page.locator("#txt2img_reuse_seed").click()
    wait_until(lambda: h.number(page, "txt2img_seed") == seed, 15, what="♻️ to fill the seed")
    info2 = h.generate(page)
    assert h.seed_from_info(info2) == seed
    second = h.first_gallery_image(page, "txt2img")
    assert np.array_equal(pixels(first), pixels(second)), "same seed must give the same image"

    page.locator("#txt2img_random_seed").click()
    wait_until(lambda: h.number(page, "txt2img_seed") == -1, 15, what="🎲 to reset the seed")


def test_send_to_img2img_and_generate(page):
    h.fill(page, "txt2img_prompt", "green square")
    small_job(page)
    h.set_number(page, "txt2img_seed", 77)
    h.generate(page)
    page.locator("#txt2img_send_to_img2img").click()
    page.locator("#img2img_image img").first.wait_for(timeout=15_000)
    assert h.textbox(page, "img2img_prompt") == "green square"
    assert h.number(page, "img2img_seed") == 77
    assert h.number(page, "img2img_width") == SMALL
    h.set_number(page, "img2img_steps", 4)
    h.set_number(page, "img2img_denoising_strength", 0.5)
    info = h.generate(page, "img2img")
    assert "Denoising strength: 0.5" in info
    assert "green square" in info
    assert h.first_gallery_image(page, "img2img").size == (SMALL, SMALL)


def test_inpaint_with_uploaded_mask(page, tmp_path):
    image = Image.new("RGB", (SMALL, SMALL), (200, 30, 30))
    mask = Image.new("L", (SMALL, SMALL), 0)
    mask.paste(255, (16, 16, 48, 48))
    image.save(tmp_path / "image.png")
    mask.convert("RGB").save(tmp_path / "mask.png")

    h.tab(page, "img2img")
    h.tab(page, "Inpaint upload")
    wait_until(lambda: page.locator("#inpaint_controls").first.is_visible(), 15, what="inpaint controls")
    h.upload(page, "img_inpaint_base", tmp_path / "image.png")
    h.upload(page, "img_inpaint_mask", tmp_path / "mask.png")
    page.locator("#img_inpaint_mask img").first.wait_for(timeout=15_000)
    h.fill(page, "img2img_prompt", "a white dot")
    small_job(page, "img2img")
    h.set_number(page, "img2img_mask_blur", 2)
    page.locator("#img2img_inpainting_fill").get_by_text("latent noise", exact=True).click()
    info = h.generate(page, "img2img")
    assert "Mask blur: 2" in info
    assert "Masked content: latent noise" in info
    out = pixels(h.first_gallery_image(page, "img2img"))
    # Outside the mask the picture is kept (composited back), inside it is repainted.
    assert np.abs(out[:8, :8] - np.array([200, 30, 30])).max() <= 12
    assert np.abs(out[28:36, 28:36] - np.array([200, 30, 30])).mean() > 12


def test_png_info_reads_output_and_sends_to_txt2img(page, server, tmp_path):
    from modules.generation.request import GenerationRequest

    result = server.ctx.queue.run(GenerationRequest(
        prompt="a tiny house, (night:1.2)", negative_prompt="daylight, people", seed=4242, steps=5,
        cfg_scale=5.5, sampler_name="Euler a", scheduler="SGM Uniform", width=SMALL, height=72))
    assert result.saved_paths, "the output was not saved"
    path = Path(result.saved_paths[0])

    h.tab(page, "PNG Info")
    h.upload(page, "pnginfo_image", path)
    page.locator("#pnginfo_html").get_by_text("Seed: 4242", exact=False).wait_for(timeout=15_000)
    assert "a tiny house, (night:1.2)" in page.locator("#pnginfo_html").inner_text()
    page.locator("#pnginfo_send_txt2img").click()
    page.locator("#txt2img_prompt textarea").wait_for(state="visible")
    wait_until(lambda: h.textbox(page, "txt2img_prompt") == "a tiny house, (night:1.2)", 15, what="prompt")
    assert h.textbox(page, "txt2img_neg_prompt") == "daylight, people"
    assert h.number(page, "txt2img_seed") == 4242
    assert h.number(page, "txt2img_steps") == 5
    assert h.number(page, "txt2img_cfg_scale") == 5.5
    assert h.number(page, "txt2img_width") == SMALL
    assert h.number(page, "txt2img_height") == 72
    assert h.dropdown_value(page, "txt2img_sampling") == "Euler a"
    assert h.dropdown_value(page, "txt2img_scheduler") == "SGM Uniform"
    shot(page, "png_info_sent_to_txt2img")

    # and straight back: generating with the pasted fields reproduces the image
    info = h.generate(page)
    assert h.seed_from_info(info) == 4242
    again = h.first_gallery_image(page, "txt2img")
    assert np.array_equal(pixels(again), pixels(Image.open(path)))


def fill_long_job(page, prompt: str, batch_count: int, steps: int = 40) -> None:
    h.fill(page, "txt2img_prompt", prompt)
    small_job(page, steps=steps)
    h.set_number(page, "txt2img_batch_count", batch_count)


def start_long_job(page, server):
    """Click Generate, wait until the job runs (ETA shown); returns the queue's task and the log before."""
    before = h.log_html(page, "txt2img")
    page.locator("#txt2img_generate").click()
    page.locator("#txt2img_progress").get_by_text("ETA", exact=False).wait_for(timeout=60_000)
    running = server.ctx.queue.current
    assert running is not None
    return running, before


def test_interrupt_only_stops_own_job(page, browser, server):
    """Two browser sessions with a job each: Interrupt in one stops only that session's job."""
    other_log = PageLog()
    other = open_page(browser, server.url, other_log)
    try:
        for pg in (page, other):
            fill_long_job(pg, "long job", batch_count=100)
        running, before = start_long_job(page, server)
        page.locator("#txt2img_preview img").first.wait_for(timeout=60_000)  # live preview (every 5 steps)

        other_before = h.log_html(other, "txt2img")
        other.locator("#txt2img_generate").click()
        other.locator("#txt2img_progress").get_by_text("Waiting in queue", exact=False).wait_for(timeout=30_000)
        shot(other, "interrupt_second_session_queued")
        other.locator("#txt2img_interrupt").click()
        time.sleep(1.0)
        assert server.ctx.queue.current is running and not running.control.interrupted

        shot(page, "interrupt_progress")
        page.locator("#txt2img_interrupt").click()
        h.wait_finished(page, "txt2img", before, timeout_ms=60_000)
        assert running.control.interrupted
        assert "Interrupted" in page.locator("#html_log_txt2img").inner_text()
        assert 0 < page.locator("#txt2img_gallery img").count() < 100
        # the other session's job was interrupted before it started: it ends at once, empty
        h.wait_finished(other, "txt2img", other_before, timeout_ms=60_000)
        assert "Interrupted" in other.locator("#html_log_txt2img").inner_text()
    finally:
        other.context.close()
    other_log.check()


def test_keyboard_shortcuts(page):
    box = page.locator("#txt2img_prompt textarea")
    box.fill("a cat sitting")
    box.dispatch_event("input")
    box.click()
    # put the cursor inside "cat"
    box.evaluate("el => el.setSelectionRange(3, 3)")
    box.press("Control+ArrowUp")
    assert box.input_value() == "a (cat:1.1) sitting"
    box.press("Control+ArrowUp")
    assert box.input_value() == "a (cat:1.2) sitting"
    box.press("Control+ArrowDown")
    box.press("Control+ArrowDown")
    assert box.input_value() == "a cat sitting"
    box.evaluate("el => el.setSelectionRange(6, 13)")  # "sitting"
    box.press("Control+ArrowDown")
    assert box.input_value() == "a cat (sitting:0.9)"

    small_job(page)
    h.set_number(page, "txt2img_height", 72)
    page.locator("#txt2img_res_switch_btn").click()  # ⇅ swaps width and height
    wait_until(lambda: (h.number(page, "txt2img_width"), h.number(page, "txt2img_height")) == (72, SMALL), 15,
               what="width/height swap")
    page.locator("#txt2img_subseed_show input").check()  # "Extra" shows the variation seed controls
    page.locator("#txt2img_subseed_strength").wait_for(state="visible", timeout=15_000)
    h.set_number(page, "txt2img_subseed_strength", 0.25)
    before = h.log_html(page, "txt2img")
    box.press("Control+Enter")
    info = h.wait_finished(page, "txt2img", before)
    assert "a cat (sitting:0.9)" in info
    assert "Size: 72x64" in info and "Variation seed strength: 0.25" in info


def test_styles_save_and_apply(page, server):
    h.fill(page, "txt2img_prompt", "{prompt}, oil painting")
    h.fill(page, "txt2img_neg_prompt", "photo")
    page.locator("#txt2img_style_edit").click()
    h.fill(page, "txt2img_style_name", "Oil")
    page.locator("#txt2img_style_save").click()
    page.locator("#txt2img_style_message").get_by_text("Saved style", exact=False).wait_for(timeout=15_000)
    styles_csv = server.data_dir / "styles.csv"
    assert "Oil,\"{prompt}, oil painting\",photo" in styles_csv.read_text(encoding="utf-8")

    h.fill(page, "txt2img_prompt", "a boat")
    h.fill(page, "txt2img_neg_prompt", "")
    h.choose(page, "txt2img_styles", "Oil")
    page.locator("#txt2img_style_apply").click()
    wait_until(lambda: h.textbox(page, "txt2img_prompt") == "a boat, oil painting", 15, what="style applied")
    assert h.textbox(page, "txt2img_neg_prompt") == "photo"
    # the img2img tab's dropdown knows the new style too
    h.tab(page, "img2img")
    h.choose(page, "img2img_styles", "Oil")


def test_errors_are_readable_and_page_stays_usable(page):
    h.tab(page, "img2img")
    small_job(page, "img2img")
    page.locator("#img2img_generate").click()
    assert "Upload an image" in h.toast_text(page)
    h.wait_idle(page, "img2img")
    page.wait_for_timeout(400)
    shot(page, "error_toast")
    page.locator(".toast-close").first.click()

    # a pydantic ValidationError names the field and the allowed range
    h.tab(page, "txt2img")
    small_job(page)
    h.set_number(page, "txt2img_seed", 2**40)
    page.locator("#txt2img_generate").click()
    text = h.toast_text(page)
    assert "seed" in text and "4294967295" in text, text
    h.wait_idle(page, "txt2img")

    # the page still works
    h.set_number(page, "txt2img_seed", -1)
    assert "Seed:" in h.generate(page)


def test_settings_survive_restart(browser, data_root):
    data_dir = data_root / "restart"
    first = start_server(data_dir)
    log = PageLog()
    try:
        page = open_page(browser, first.url, log)
        h.tab(page, "Settings")
        h.tab(page, "Live previews")
        h.set_number(page, "setting_show_progress_every_n_steps", 3)
        h.tab(page, "Defaults")
        h.set_number(page, "setting_default_steps", 25)
        h.tab(page, "Saving images/grids")
        page.locator("#setting_samples_format").get_by_text("jpg", exact=True).click()
        page.locator("#settings_submit").click()
        page.locator("#settings_result").get_by_text("3 settings changed", exact=False).wait_for(timeout=15_000)
        saved = json.loads((data_dir / "config.json").read_text())
        assert saved["show_progress_every_n_steps"] == 3 and saved["samples_format"] == "jpg"
        # applied without restart: the next job saves a jpg, a new page starts at 25 steps
        assert first.ctx.settings.get().samples_format == "jpg"
        reload_page(page)
        wait_until(lambda: h.number(page, "txt2img_steps") == 25, 15, what="new default steps on reload")
        small_job(page)
        h.generate(page)
        assert list((data_dir / "outputs" / "txt2img-images").rglob("*.jpg"))
        h.set_number(page, "setting_CLIP_stop_at_last_layers", 2)
        wait_until(lambda: first.ctx.settings.get().CLIP_stop_at_last_layers == 2, 15, what="clip skip saved")
        page.context.close()
    finally:
        first.close()

    second = start_server(data_dir)
    try:
        page = open_page(browser, second.url, log)
        assert h.number(page, "setting_CLIP_stop_at_last_layers") == 2
        h.tab(page, "Settings")
        h.tab(page, "Live previews")
        assert h.number(page, "setting_show_progress_every_n_steps") == 3
        h.tab(page, "Saving images/grids")
        assert page.locator("#setting_samples_format input[value=jpg]").is_checked()
        shot(page, "settings_after_restart")
        page.context.close()
    finally:
        second.close()
    log.check()


def test_ui_config_defaults_are_written_and_used(browser, data_root):
    data_dir = data_root / "uiconfig"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "ui-config.json").write_text(json.dumps({"txt2img/Sampling steps/value": 9,
                                                         "txt2img/Width/value": 128}))
    srv = start_server(data_dir)
    log = PageLog()
    try:
        written = json.loads((data_dir / "ui-config.json").read_text())
        assert written["txt2img/Sampling steps/value"] == 9
        assert written["txt2img/CFG Scale/value"] == 7.0
        assert written["img2img/Denoising strength/maximum"] == 1.0
        page = open_page(browser, srv.url, log)
        assert h.number(page, "txt2img_steps") == 9
        assert h.number(page, "txt2img_width") == 128
        page.context.close()
    finally:
        srv.close()
    log.check()


def test_image_tools_save_zip_folder(page, server):
    h.fill(page, "txt2img_prompt", "tools")
    small_job(page)
    h.set_number(page, "txt2img_batch_size", 2)
    h.generate(page)
    assert h.gallery_images(page, "txt2img").count() >= 3  # grid + 2 images (thumbnails)
    page.locator("#save_txt2img").click()
    page.locator("#html_log_txt2img").get_by_text("Saved:", exact=False).wait_for(timeout=15_000)
    saved = list((server.data_dir / "log" / "images").glob("*.png"))
    assert saved and "tools" in Image.open(saved[0]).info["parameters"]
    assert (server.data_dir / "log" / "log.csv").read_text().startswith("prompt,seed,")
    page.locator("#download_files_txt2img").first.wait_for(state="visible", timeout=15_000)

    page.locator("#save_zip_txt2img").click()
    page.locator("#html_log_txt2img").get_by_text(".zip", exact=False).wait_for(timeout=15_000)
    import zipfile

    archive = next((server.data_dir / "log" / "images").glob("*.zip"))
    assert len(zipfile.ZipFile(archive).namelist()) == 2

    page.locator("#txt2img_open_folder").click()
    folder_note = page.locator("#html_log_txt2img").get_by_text("Outputs folder:", exact=False)
    folder_note.wait_for(timeout=15_000)
    assert str(server.data_dir / "outputs" / "txt2img-images") in folder_note.inner_text()


def test_style_selected_in_dropdown_is_used_when_generating(page, server):
    (server.data_dir / "styles.csv").write_text("name,prompt,negative_prompt\nNeon,\"neon glow, {prompt}\",dull\n")
    reload_page(page)
    h.fill(page, "txt2img_prompt", "a street")
    small_job(page)
    h.choose(page, "txt2img_styles", "Neon")
    info = h.generate(page)
    assert info.startswith("neon glow, a street")
    assert "Negative prompt: dull" in info


def test_batch_folder(page, tmp_path):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    for name, colour in (("one", (250, 0, 0)), ("two", (0, 250, 0))):
        Image.new("RGB", (SMALL, SMALL), colour).save(in_dir / f"{name}.png")
    h.tab(page, "img2img")
    h.tab(page, "Batch")
    h.fill(page, "img2img_batch_input_dir", str(in_dir))
    h.fill(page, "img2img_batch_output_dir", str(out_dir))
    h.fill(page, "img2img_prompt", "batch")
    small_job(page, "img2img", steps=3)
    h.generate(page, "img2img")
    assert sorted(p.name for p in out_dir.iterdir()) == ["one.png", "two.png"]
    assert "batch" in Image.open(out_dir / "one.png").info["parameters"]


def test_send_to_inpaint_and_draw_mask(page):
    h.fill(page, "txt2img_prompt", "draw")
    small_job(page)
    h.generate(page)
    page.locator("#txt2img_send_to_inpaint").click()
    canvas = page.locator("#img2maskimg canvas").first
    canvas.wait_for(state="visible", timeout=15_000)
    wait_until(lambda: page.locator("#inpaint_controls").first.is_visible(), 15, what="inpaint controls")
    assert h.textbox(page, "img2img_prompt") == "draw"
    page.wait_for_timeout(800)
    # the brush (fixed white) is the editor's default tool: paint a short stroke in the middle
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 20, cy)
    page.mouse.down()
    page.mouse.move(cx, cy + 5)
    page.mouse.move(cx + 20, cy + 10)
    page.mouse.up()
    page.wait_for_timeout(500)
    shot(page, "inpaint_mask_drawn")
    h.set_number(page, "img2img_steps", 3)
    info = h.generate(page, "img2img")
    assert "Mask blur" in info


def test_sketch_drawing_reaches_the_engine(page, tmp_path):
    """Sketch: upload a white picture, draw on it; at denoising strength 0 the result is exactly the
    drawn composite, so the stroke must show up in the output."""
    Image.new("RGB", (SMALL, SMALL), (255, 255, 255)).save(tmp_path / "white.png")
    h.tab(page, "img2img")
    h.tab(page, "Sketch")
    # the editor mounts when its tab first shows; an upload before that is lost
    page.locator("#img2img_sketch canvas").first.wait_for(state="visible", timeout=15_000)
    page.wait_for_timeout(1000)
    h.upload(page, "img2img_sketch", tmp_path / "white.png")
    canvas = page.locator("#img2img_sketch canvas").first
    page.wait_for_timeout(1500)
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # a short stroke in the middle (the editor's automatic brush size is large for a 64px picture)
    page.mouse.move(cx - 4, cy)
    page.mouse.down()
    page.mouse.move(cx, cy)
    page.mouse.move(cx + 4, cy)
    page.mouse.up()
    page.wait_for_timeout(500)
    shot(page, "sketch_drawn")
    h.fill(page, "img2img_prompt", "sketch")
    small_job(page, "img2img", steps=3)
    h.set_number(page, "img2img_denoising_strength", 0)
    h.generate(page, "img2img")
    out = pixels(h.first_gallery_image(page, "img2img"))
    assert out.shape[:2] == (SMALL, SMALL)
    assert out[:3].min() >= 240  # the top rows, far from the stroke, stay white
    centre = out[SMALL // 2 - 2:SMALL // 2 + 2, SMALL // 2 - 2:SMALL // 2 + 2]
    assert centre.min() < 128, "the drawn stroke is missing from the output"


def test_switch_checkpoint_in_quicksettings(page, server):
    from tests.tiny_model import save_tiny_model_dir

    save_tiny_model_dir(server.data_dir / "models" / "Stable-diffusion" / "tiny2", seed=1)
    second = "tiny2"
    page.locator("#refresh_sd_model_checkpoint").click()
    page.wait_for_timeout(1000)
    h.choose(page, "setting_sd_model_checkpoint", second)
    wait_until(lambda: server.ctx.settings.get().sd_model_checkpoint == second, 60, what="checkpoint saved")
    h.fill(page, "txt2img_prompt", "other model")
    small_job(page)
    info = h.generate(page)
    assert f"Model: {second.split(' [')[0].split('/')[-1].rsplit('.', 1)[0]}" in info


def test_gradio_auth(browser, data_root, monkeypatch):
    from tests.ui import conftest

    srv = conftest.start_server(data_root / "auth", gradio_auth="alice:secret")
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(srv.url)
        page.get_by_label("username").fill("alice")
        page.get_by_label("password").fill("secret")
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#txt2img_generate", timeout=60_000)
        context.close()
    finally:
        srv.close()


def test_skip_ends_only_the_current_batch(page, server):
    # 150 steps a batch (a few seconds each): the click must land while the first batch still runs
    fill_long_job(page, "skip me", batch_count=3, steps=150)
    running, before = start_long_job(page, server)
    page.locator("#txt2img_skip").click()
    h.wait_finished(page, "txt2img", before, timeout_ms=180_000)
    result = running.future.result(timeout=10)
    assert not result.interrupted and len(result.images) == 3
    assert any("skipped" in w for w in result.warnings)
    assert page.locator("#txt2img_gallery img").count() >= 3
