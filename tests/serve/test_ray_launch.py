"""`python -m modules.serve` as a user runs it: a local Ray cluster, one CPU replica, the UI and
the API in front."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.test_launch import REPO, free_port, wait_for

pytestmark = pytest.mark.slow


def test_python_m_modules_serve_serves_the_ui_and_answers_the_api_from_a_replica(tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "modules.serve", "--api", "--port", str(port),
                             "--data-dir", str(tmp_path), "--use-cpu", "--ray-replicas", "1", "--ray-threads", "1"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, proc, timeout=240)
        # the API joins gradio's app right after it starts
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/sdapi/v1/sd-models", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the API routes did not join the UI's app"
            time.sleep(0.5)
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        flags = httpx.get(f"{url}/sdapi/v1/cmd-flags", timeout=30).json()
        assert flags["ray"] == "local" and flags["ray_replicas"] == 1
        answer = httpx.post(f"{url}/sdapi/v1/txt2img", timeout=240,
                            json={"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 9})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["images"]) == 1
        assert "Started a local Ray instance" in (tmp_path / "serve.log").read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
