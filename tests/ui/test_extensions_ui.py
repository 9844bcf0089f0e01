"""The extension system in a real browser, on the real app started by launch.py in a subprocess
(so "Apply and restart UI" really restarts the process): a sample user extension in the data
folder's extensions/ is listed, its accordion changes a job, its on_ui_tabs tab and javascript are
on the page, and disabling it survives the restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect

from tests.ui.conftest import REPO, PageLog, free_port, open_page, shot
from tests.ui.helpers import fill, first_gallery_image, generate, set_number, tab
from tests.ui_sample_extension import NAME, make_sample_extension

START_TIMEOUT_S = 240


class LaunchedApp:
    """launch.py in its own process; its output goes to a file (a pipe nobody reads would fill up)."""

    def __init__(self, data_dir: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = data_dir / "launch.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "launch.py", "--port", str(self.port), "--data-dir", str(data_dir), "--no-hashing",
             "--use-cpu", *flags], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def answers(self) -> bool:
        try:
            return httpx.get(self.url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_up(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"launch.py exited with {self.proc.returncode}:\n{self.log()}"
            if self.answers():
                return
            time.sleep(0.5)
        raise AssertionError(f"{self.url} did not answer in {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def launched(tmp_path):
    make_sample_extension(tmp_path / "extensions")
    app = LaunchedApp(tmp_path)
    yield app
    app.stop()


def table_row(page):
    return page.locator(f"#extensions_installed_table tr[data-extension='{NAME}']")


def enable_box(page):
    return page.locator(f"#extensions_installed_table input[data-extension='{NAME}']")


def test_extension_lifecycle_in_the_browser(browser, launched, tmp_path):
    launched.wait_up()
    log = PageLog()
    page = open_page(browser, launched.url, log)
    try:
        # the extension's javascript and style.css are on the page, only those files are served
        assert page.evaluate("window.SAMPLE_UI_EXT_LOADED") == 1
        folder = (tmp_path / "extensions" / NAME).resolve()
        file_url = launched.url + "gradio_api/file=" + folder.as_posix()
        assert httpx.get(file_url + "/javascript/sample.js", timeout=10).status_code == 200
        assert httpx.get(file_url + "/scripts/sample_invert.py", timeout=10).status_code == 403
        assert httpx.get(file_url + "/javascript/../scripts/sample_invert.py", timeout=10).status_code in (403, 404)

        # its on_ui_tabs tab
        tab(page, "Sample Tab")
        page.locator("#sample_tab_text").wait_for(state="visible")

        # its accordion changes a job: the same seed with "Invert colours" on gives the inverted picture
        tab(page, "txt2img")
        fill(page, "txt2img_prompt", "a red circle on a white background")
        set_number(page, "txt2img_seed", 1234)
        set_number(page, "txt2img_steps", 6)
        generate(page)
        info = page.locator("#html_info_txt2img")
        expect(info).to_contain_text("Seed: 1234")  # the gallery and info of this run are shown
        plain_info = info.inner_text()
        plain = np.asarray(first_gallery_image(page, "txt2img").convert("RGB"), dtype=np.int16)
        page.locator("#script_txt2img_sample_invert_accordion").get_by_text("Sample Invert").first.click()
        page.locator("#script_txt2img_sample_invert_invert input[type=checkbox]").check()
        generate(page)
        expect(info).to_contain_text("Sample invert: hello")  # its process() wrote the infotext field
        inverted = np.asarray(first_gallery_image(page, "txt2img").convert("RGB"), dtype=np.int16)
        assert "Sample invert" not in plain_info and "Seed: 1234" in info.inner_text()
        assert np.array_equal(inverted, 255 - plain)

        # the Extensions tab lists it: user extension, git version, enabled
        tab(page, "Extensions")
        row = table_row(page)
        row.wait_for(state="visible")
        cells = row.locator("td").all_inner_texts()
        assert cells[0].strip() == NAME and cells[4] == "user" and cells[5] == "loaded" and len(cells[3]) == 8
        assert enable_box(page).is_checked()

        # Install from URL: refusals are explained (the UI never accepts a local repository)
        tab(page, "Install from URL")
        fill(page, "extension_install_url", (tmp_path / "nowhere.git").as_uri())
        page.locator("#extension_install_button").click()
        page.locator("#extension_install_result [data-reason='invalid_url']").wait_for(state="visible")

        # disable it, apply and restart: the process re-executes itself
        tab(page, "Installed")
        enable_box(page).uncheck()
        page.locator("#extensions_apply").click()
        page.locator("#extensions_apply_result [data-restarting]").wait_for(state="visible")
        settings = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
        assert settings["disabled_extensions"] == [NAME]
        shot(page, "extensions_before_restart")
        log.check()
    finally:
        page.context.close()

    deadline = time.time() + 60  # the old server goes away, then the new one answers
    while launched.answers() and time.time() < deadline:
        time.sleep(0.25)
    launched.wait_up()
    assert launched.proc.poll() is None  # the same process, re-executed

    log = PageLog()
    page = open_page(browser, launched.url, log)
    try:
        assert page.locator("#script_txt2img_sample_invert_accordion").count() == 0
        assert page.get_by_role("tab", name="Sample Tab", exact=True).count() == 0
        assert page.evaluate("window.SAMPLE_UI_EXT_LOADED") is None
        tab(page, "Extensions")
        table_row(page).wait_for(state="visible")
        assert not enable_box(page).is_checked()
        assert table_row(page).locator("td.extension-status").inner_text() == "disabled"
        shot(page, "extensions_after_restart")
        log.check()
    finally:
        page.context.close()
