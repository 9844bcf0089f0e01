"""The API against a real server: uvicorn on a free loopback port, the real engine, on the
embedded default model.

A tiny diffusers model sits in models/Stable-diffusion beside it, so a request can switch
models with override_settings. One context (queue, registry, engine) is shared by every
server of the session, as launch.py shares it between the UI and the API.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn

from modules.cmd_args import parse_args
from modules.paths import EMBEDDED_MODEL_DIR
from tests.tiny_model import save_tiny_model_dir
from tests.torch_threads import one_torch_thread as single_torch_thread

MODEL_A, MODEL_B = EMBEDDED_MODEL_DIR.name, "tiny-b"
STYLES_CSV = 'name,prompt,negative_prompt\nsunny,"{prompt}, sunny day",blurry\n'


class Server:
    """A uvicorn server in a thread, bound to a socket we opened, so the port is known and free."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("api-data")
    models = root / "models" / "Stable-diffusion"
    save_tiny_model_dir(models / MODEL_B, seed=11)
    (root / "models" / "VAE").mkdir(parents=True, exist_ok=True)
    (root / "styles.csv").write_text(STYLES_CSV, encoding="utf-8")
    return root


def make_args(data_dir: Path, *extra: str) -> argparse.Namespace:
    return parse_args(["--data-dir", str(data_dir), "--use-cpu", "--api", "--nowebui",
                       "--ckpt", MODEL_A, *extra])


@pytest.fixture(scope="session")
def ctx(data_dir):
    from modules.app_factory import create_context

    context = create_context(make_args(data_dir))
    context.settings.update({"show_progress_every_n_steps": 1, "live_previews_enable": True})
    yield context
    context.queue.shutdown()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    with single_torch_thread():
        yield


@pytest.fixture(scope="session")
def server(ctx) -> Iterator[Server]:
    from modules.api import create_api_app

    with Server(create_api_app(ctx)) as srv:
        yield srv


@pytest.fixture(scope="session")
def auth_server(ctx, data_dir) -> Iterator[Server]:
    from modules.api import create_api_app

    args = make_args(data_dir, "--api-auth", "alice:s3cret,bob:pa:ss")
    with Server(create_api_app(dataclasses.replace(ctx, args=args))) as srv:
        yield srv


@pytest.fixture()
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
