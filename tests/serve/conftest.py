"""A local Ray cluster with two CPU replicas of the embedded model, the --ray front end over it
(the real API on a loopback port), and a single-process server on the same data as the reference.

Both the replicas and this process run torch on one thread, so the same request gives the same
pixels in both (CPU kernels may sum in another order with another thread count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest

from modules.cmd_args import parse_args
from modules.paths import EMBEDDED_MODEL_DIR
from tests.api.conftest import Server
from tests.tiny_model import save_tiny_model_dir
from tests.torch_threads import one_torch_thread

MODEL_A, MODEL_B = EMBEDDED_MODEL_DIR.name, "tiny-b"
REPLICAS = 2

pytestmark = pytest.mark.slow


def make_args(data_dir: Path, *extra: str):
    return parse_args(["--data-dir", str(data_dir), "--use-cpu", "--api", "--nowebui", "--ckpt", MODEL_A,
                       "--ray", *extra])


@pytest.fixture(scope="package")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-data")
    save_tiny_model_dir(root / "models" / "Stable-diffusion" / MODEL_B, seed=11)
    return root


@pytest.fixture(scope="package")
def ray_cluster():
    import ray
    from ray import serve

    from modules.serve.launcher import runtime_env

    ray.init(num_cpus=REPLICAS, include_dashboard=False, object_store_memory=256 * 2**20,
             runtime_env=runtime_env(1), log_to_driver=False)
    try:
        yield ray
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="package")
def remote(ray_cluster, data_dir):
    from modules.serve.config import ServeConfig
    from modules.serve.launcher import deploy, replica_args

    config = ServeConfig(num_replicas=REPLICAS, ray_actor_options={"num_cpus": 1, "num_gpus": 0}, threads=1)
    engine = deploy(config, replica_args(make_args(data_dir)), models_per_replica=2)
    engine.backoff_s = 0.5
    return engine


@pytest.fixture(scope="package", autouse=True)
def single_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="package")
def front(remote, data_dir):
    """The --ray front end: the usual context and API, generations on the replicas."""
    from modules.app_factory import create_context

    ctx = create_context(make_args(data_dir), remote=remote)
    ctx.settings.update({"show_progress_every_n_steps": 1, "live_previews_enable": True})
    yield ctx
    ctx.queue.shutdown()


@pytest.fixture(scope="package")
def front_client(front) -> Iterator[httpx.Client]:
    from modules.api import create_api_app

    with Server(create_api_app(front)) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        yield client


@pytest.fixture(scope="package")
def reference_client(data_dir, tmp_path_factory) -> Iterator[httpx.Client]:
    """One process, no Ray: what every image must equal. Its own settings file and outputs."""
    from modules.api import create_api_app
    from modules.app_factory import create_context

    own = tmp_path_factory.mktemp("reference")
    args = parse_args(["--data-dir", str(data_dir), "--use-cpu", "--api", "--nowebui", "--ckpt", MODEL_A,
                       "--ui-settings-file", str(own / "config.json")])
    ctx = create_context(args)
    with Server(create_api_app(ctx)) as srv, httpx.Client(base_url=srv.url, timeout=300) as client:
        yield client
    ctx.queue.shutdown()
