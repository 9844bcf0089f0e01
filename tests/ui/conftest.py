"""Browser tests: the real app served in-process on a free loopback port, driven by Chromium.

Chromium comes from Debian (`apt-get install -y chromium`), never `playwright install`.
Backend: the real app (modules.app_factory.create_context: real registry, engine and queue) on the
embedded default model.
Screenshots go to test-artifacts/ui/.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"

# Console messages that are not errors of ours.
IGNORED_CONSOLE = ("favicon.ico", "[Violation]", "Download the React DevTools")
ABORTED_BY_RELOAD = ("AbortError: signal is aborted", "Connection errored out")

if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    ctx: object
    demo: object
    url: str
    data_dir: Path

    def close(self) -> None:
        self.demo.close()
        self.ctx.queue.shutdown(timeout=10)


def real_context(data_dir: Path, port: int = 7860, extra_args: tuple[str, ...] = ()):
    """The app as launch.py builds it, on the embedded default model (the models folder is empty)."""
    from modules.app_factory import create_context
    from modules.cmd_args import parse_args
    from modules.paths import EMBEDDED_MODEL_DIR

    args = parse_args(["--data-dir", str(data_dir), "--port", str(port), "--no-hashing", "--use-cpu",
                       "--ckpt", EMBEDDED_MODEL_DIR.name, *extra_args])
    return create_context(args)


def start_server(data_dir: Path, **flags) -> Server:
    """Serve the app on a free port; `flags` are launch flags (gradio_auth="u:p" → --gradio-auth u:p)."""
    from webui.app import launch_ui

    port = free_port()
    extra = [item for key, value in flags.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    ctx = real_context(data_dir, port, tuple(extra))
    demo = launch_ui(ctx, quiet=True)
    return Server(ctx, demo, f"http://127.0.0.1:{port}/", data_dir)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("webui")


@pytest.fixture(scope="session")
def server(data_root) -> Server:
    srv = start_server(data_root / "main")
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class PageLog:
    errors: list[str] = field(default_factory=list)
    reloading: bool = False  # while set, the old document's aborted requests are not errors

    def check(self) -> None:
        assert not self.errors, "browser console errors:\n" + "\n".join(self.errors)


def open_page(browser, url: str, log: PageLog, viewport=(1400, 1000)):
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
    page = context.new_page()

    def on_console(msg):
        if msg.type != "error" or any(s in msg.text for s in IGNORED_CONSOLE):
            return
        if log.reloading and any(s in msg.text for s in ABORTED_BY_RELOAD):
            return
        log.errors.append(f"console.error: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: log.errors.append(f"uncaught: {exc}"))
    page.goto(url)
    page.wait_for_selector("#txt2img_generate", timeout=60_000)
    # the page-load event has filled the controls (settings, defaults) before a test types into them
    page.wait_for_selector("body[data-sd-loaded='1']", state="attached", timeout=60_000)
    page.sd_page_log = log
    return page


def reload_page(page) -> None:
    """Reload and wait for the new page's load event; gradio's requests that the reload cuts off
    (its event stream, a pending fetch) log as errors of the old document, not of the app."""
    log = page.sd_page_log
    log.reloading = True
    try:
        page.reload()
        page.wait_for_selector("#txt2img_generate", timeout=60_000)
        page.wait_for_selector("body[data-sd-loaded='1']", state="attached", timeout=60_000)
    finally:
        log.reloading = False


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(browser, server, page_log, request):
    """A fresh browser session (its own gradio session) on the shared server."""
    pg = open_page(browser, server.url, page_log)
    yield pg
    shot(pg, request.node.name)
    pg.context.close()
    page_log.check()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    try:
        page.screenshot(path=str(path), full_page=True)
    except Exception:  # a screenshot must not hide the test's own failure
        pass
    return path


def wait_until(check: Callable[[], bool], timeout: float = 60, interval: float = 0.1, what: str = "condition"):
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
