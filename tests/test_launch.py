"""launch.py as a user runs it: a real process on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from modules.cmd_args import parse_args, parse_credentials

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> httpx.Response:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"launch.py exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            return httpx.get(url, timeout=5)
        except httpx.HTTPError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.fixture()
def launched(tmp_path):
    procs = []

    def start(*flags: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        proc = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--data-dir", str(tmp_path),
                                 *flags], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        procs.append(proc)
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_ui_with_api_on_one_port(launched, tmp_path):
    url, proc = launched("--api")
    page = wait_for(url + "/", proc)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    deadline = time.time() + 30  # the API joins gradio's app right after the server starts
    while (models := httpx.get(url + "/sdapi/v1/sd-models", timeout=30)).status_code == 404 and time.time() < deadline:
        time.sleep(0.5)
    assert models.status_code == 200 and isinstance(models.json(), list)
    assert httpx.get(url + "/sdapi/v1/samplers", timeout=30).json()[0]["name"]
    assert (tmp_path / "outputs").is_dir() and (tmp_path / "models" / "Stable-diffusion").is_dir()


def test_ui_without_api_flag_has_no_api_routes(launched):
    url, proc = launched()
    wait_for(url + "/", proc)
    assert httpx.get(url + "/sdapi/v1/sd-models", timeout=30).status_code == 404


def test_flags_parse_as_a1111_names_them():
    args = parse_args(["--listen", "--port", "7861", "--api", "--ckpt-dir", "/a", "--ckpt-dir", "/b", "--medvram",
                       "--no-half-vae", "--gradio-auth", "u:p", "--theme", "dark"])
    assert args.listen and args.port == 7861 and args.api and args.ckpt_dir == ["/a", "/b"]
    assert args.medvram and args.no_half_vae and args.theme == "dark"
    assert parse_credentials("u:p, v:q:r\nw:") == [("u", "p"), ("v", "q:r"), ("w", "")]
    with pytest.raises(ValueError, match="user:password"):
        parse_credentials("nopassword")


def test_startup_log_names_our_share_flag_not_gradios(launched):
    url, proc = launched()
    wait_for(url + "/", proc)
    # The page can answer a moment before launch() returns and the line is printed: read until
    # the line arrives (or the process ends), then stop the server.
    output, deadline = "", time.time() + 60
    while "start with --share." not in output and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output += line
    proc.terminate()
    output += proc.communicate(timeout=30)[0]
    assert f"Running on local URL:  {url}" in output
    assert "To create a public link, start with --share." in output
    assert "share=True" not in output and "launch()" not in output
