"""Driving gradio controls from Playwright by their elem_id."""

from __future__ import annotations

import io
import re

from PIL import Image

GENERATE_TIMEOUT_MS = 120_000


def fill(page, elem_id: str, text: str) -> None:
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first
    box.fill(text)
    box.dispatch_event("input")
    box.blur()


def set_number(page, elem_id: str, value) -> None:
    """A slider's or number's numeric box. A box typed into while its tab is still mounting loses
    the value (the mounted one replaces it), so the value is checked and typed again until it holds."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    for _ in range(10):
        box.wait_for(state="visible")
        box.fill(str(value))
        box.press("Enter")
        box.blur()
        page.wait_for_timeout(150)
        if float(box.input_value() or "nan") == float(value):
            return
    raise AssertionError(f"#{elem_id} did not take the value {value}")


def number(page, elem_id: str) -> float:
    return float(page.locator(f"#{elem_id} input[type=number]").first.input_value())


def textbox(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first.input_value()


def dropdown_value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input").first.input_value()


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).first.click()


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).first.click()


def log_html(page, tab_name: str) -> str:
    return page.locator(f"#html_log_{tab_name}").first.inner_html()


def wait_finished(page, tab_name: str, log_before: str, timeout_ms: int = GENERATE_TIMEOUT_MS) -> str:
    """Wait until a run ends (its log, which names its job ids, replaces `log_before`)."""
    page.wait_for_function(
        "([id, before]) => { const el = document.getElementById(id); return el && el.innerHTML !== before"
        " && el.innerText.includes('Time taken'); }",
        arg=[f"html_log_{tab_name}", log_before], timeout=timeout_ms)
    wait_idle(page, tab_name, timeout_ms)
    return page.locator(f"#html_info_{tab_name}").first.inner_text()


def generate(page, tab_name: str = "txt2img", timeout_ms: int = GENERATE_TIMEOUT_MS) -> str:
    """Click Generate and wait for the job to end; returns the generation info text."""
    before = log_html(page, tab_name)
    page.locator(f"#{tab_name}_generate").click()
    return wait_finished(page, tab_name, before, timeout_ms)


def wait_idle(page, tab_name: str, timeout_ms: int = GENERATE_TIMEOUT_MS) -> None:
    """Generate is shown again (the job ended, successfully or not)."""
    page.locator(f"#{tab_name}_interrupt").wait_for(state="hidden", timeout=timeout_ms)
    page.locator(f"#{tab_name}_generate").wait_for(state="visible", timeout=timeout_ms)


def seed_from_info(text: str) -> int:
    m = re.search(r"Seed: (\d+)", text)
    assert m, f"no seed in {text!r}"
    return int(m.group(1))


def gallery_images(page, tab_name: str):
    return page.locator(f"#{tab_name}_gallery img")


def fetch_image(page, src: str) -> Image.Image:
    response = page.request.get(src)
    assert response.ok, f"cannot fetch {src}: {response.status}"
    return Image.open(io.BytesIO(response.body()))


def first_gallery_image(page, tab_name: str) -> Image.Image:
    img = gallery_images(page, tab_name).first
    img.wait_for(state="attached")
    return fetch_image(page, img.get_attribute("src"))


def upload(page, elem_id: str, path) -> None:
    page.locator(f"#{elem_id} input[type=file]").first.set_input_files(str(path))


def toast_text(page, timeout_ms: int = 15_000) -> str:
    toast = page.locator(".toast-body").first
    toast.wait_for(state="visible", timeout=timeout_ms)
    return toast.inner_text()
