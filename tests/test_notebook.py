"""The Colab notebook, executed top to bottom by nbclient on this checkout.

SD_WEBUI_NOTEBOOK_CHECKOUT makes it use this checkout instead of cloning and installing. The form's
fields are filled as a user fills them: a LoRA by link (served here over HTTP), a ControlNet by
path, a data folder, a free port. The share step cannot reach the internet here, so the notebook
must end with the clear reason instead of a public URL, while the local URL answers.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import httpx
import nbformat
import pytest
from nbclient import NotebookClient

from tests.test_launch import free_port

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "sd_webui_colab.ipynb"
LORA = REPO / "models" / "embedded" / "Lora" / "shapes64-ring.safetensors"


def set_form(nb: nbformat.NotebookNode, **values) -> None:
    """Replace the form fields' values (`NAME = ...  #@param`) in the settings cell."""
    cell = next(c for c in nb.cells if c.cell_type == "code" and "#@param" in c.source)
    for name, value in values.items():
        cell.source, count = re.subn(rf"^{name} = .*?(  #@param.*)$", lambda m: f"{name} = {value!r}{m.group(1)}",
                                     cell.source, flags=re.M)
        assert count == 1, f"no form field {name}"


def stream_text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture()
def served_folder(tmp_path):
    """A local HTTP server standing in for a model host (the notebook downloads from it)."""
    folder = tmp_path / "host"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_notebook_starts_the_ui_and_says_why_there_is_no_public_link(tmp_path, served_folder, monkeypatch):
    folder, host = served_folder
    shutil.copy(LORA, folder / "ring-from-link.safetensors")
    data, port = tmp_path / "data", free_port()
    monkeypatch.setenv("SD_WEBUI_NOTEBOOK_CHECKOUT", str(REPO))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no frpc there, as on a fresh Colab runtime
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    set_form(nb, LORA=f"{host}/ring-from-link.safetensors", CONTROLNET=str(LORA), DATA_DIR=str(data), PORT=port,
             KEEP_CELL_RUNNING=False)
    client = NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    pid_file = data / "log" / "webui.pid"
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
            # the server runs on, beside the kernel, until it is stopped
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
            stop = nbformat.v4.new_code_cell("server.terminate(); print('exit code', server.wait(60))")
            nb.cells.append(stop)
            client.execute_cell(stop, len(nb.cells) - 1)
    finally:
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        if pid is not None and pid_alive(pid):  # the notebook failed half-way: never leave a server behind
            os.kill(pid, signal.SIGKILL)
    out = stream_text(nb)

    assert "nothing cloned or installed" in out
    assert "No GPU in this runtime" in out and "Change runtime type" in out  # this machine has none
    assert (data / "models" / "Lora" / "ring-from-link.safetensors").read_bytes() == LORA.read_bytes()
    assert (data / "models" / "ControlNet" / LORA.name).resolve() == LORA
    assert "embedded model" in out
    assert f"Running on local URL:  http://127.0.0.1:{port}" in out
    reason = [ln for ln in out.splitlines() if ln.startswith("Share link could not be created: ")]
    assert reason and "api.gradio.app" in reason[0] and "internet" in reason[0]
    assert "Public URL:" not in out and "Running on public URL" not in out
    assert "--gradio-auth" in out  # the warning: a public link without a login
    assert "exit code" in out
    assert pid is not None and not pid_alive(pid)  # stopped and reaped: nothing left running
