"""Start (or join) the Ray cluster and deploy the engine replicas: what `launch.py --ray` does
before it builds the front end."""

from __future__ import annotations

import argparse
import atexit
import copy
import logging
import os
from pathlib import Path

from modules.paths import REPO_ROOT
from modules.serve.config import ServeConfig, ServeConfigError, config_from_args
from modules.serve.dispatch import RemoteEngine
from modules.serve.signals import JobSignals

log = logging.getLogger(__name__)

APP_NAME = "sd-webui"
DEPLOYMENT_NAME = "EngineReplica"
PATH_FLAGS = ("data_dir", "ui_settings_file", "ui_config_file", "ckpt", "vae_dir", "controlnet_dir",
              "controlnet_annotator_models_path", "gradio_auth_path", "lora_dir", "embeddings_dir")


def replica_args(args: argparse.Namespace) -> argparse.Namespace:
    """The front end's flags for the replicas, with relative paths made absolute (a Ray worker's
    working folder is not ours)."""
    from modules.cmd_args import MODEL_DIR_FLAGS

    out = copy.copy(args)
    for name in (*PATH_FLAGS, *(flag.replace("-", "_") for flag in MODEL_DIR_FLAGS)):
        value = getattr(out, name, None)
        if isinstance(value, str) and value and _looks_like_path(name, value):
            setattr(out, name, str(Path(value).resolve()))
    out.ckpt_dir = [str(Path(d).resolve()) for d in getattr(args, "ckpt_dir", []) or []]
    out.share = False  # only the front end serves people
    return out


def _looks_like_path(name: str, value: str) -> bool:
    # --ckpt may be a title or a file; resolve it only when it names an existing file
    return name != "ckpt" or Path(value).exists()


def runtime_env(threads: int) -> dict:
    """Replicas import this repository (same path on every node) and use `threads` BLAS threads."""
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": str(threads),
                         "MKL_NUM_THREADS": str(threads)}}


def start_ray(args: argparse.Namespace) -> RemoteEngine:
    """Connect to (or start) Ray, deploy the replicas, and return the front end's dispatcher."""
    import ray

    from modules.app_factory import build_paths, build_settings

    models_per_replica = build_settings(args, build_paths(args)).get().sd_checkpoints_limit
    try:
        config = config_from_args(args)
    except ServeConfigError as exc:
        raise SystemExit(f"--ray: {exc}") from None
    if not ray.is_initialized():
        if config.address:
            ray.init(address=config.address, runtime_env=runtime_env(1), log_to_driver=True)
        else:
            ray.init(include_dashboard=False, runtime_env=runtime_env(1), log_to_driver=True)
            atexit.register(ray.shutdown)
    resources = ray.cluster_resources()
    gpus = 0.0 if getattr(args, "use_cpu", False) else resources.get("GPU", 0.0)  # --use-cpu: CPU replicas
    config = config.with_cluster(gpus=gpus, cpus=resources.get("CPU", 1.0))
    log.info("Ray cluster: %s CPUs, %s GPUs; deploying %s replica(s) with %s each (save: %s)",
             resources.get("CPU"), resources.get("GPU", 0), config.num_replicas or config.autoscaling_config,
             config.ray_actor_options, config.save)
    return deploy(config, replica_args(args), models_per_replica)


def deploy(config: ServeConfig, args: argparse.Namespace, models_per_replica: int) -> RemoteEngine:
    import ray
    from ray import serve

    from modules.serve.replica import deployment_class

    serve.start(http_options={"location": "NoServer"})  # our own front end serves HTTP
    signals = ray.remote(num_cpus=0)(JobSignals).remote()
    actor_options = {**config.ray_actor_options,
                     "runtime_env": {**runtime_env(config.threads), **config.ray_actor_options.get("runtime_env", {})}}
    deployment = serve.deployment(deployment_class(models_per_replica), name=DEPLOYMENT_NAME)
    app = deployment.options(**{**config.deployment_options(), "ray_actor_options": actor_options}).bind(
        args, signals, config.threads)
    handle = serve.run(app, name=APP_NAME, route_prefix=None)
    atexit.register(_shutdown_serve)
    return RemoteEngine(handle=handle, signals=signals, config=config)


def _shutdown_serve() -> None:
    """Remove the replicas from a cluster we joined (a local one ends with this process)."""
    import ray

    if not ray.is_initialized():  # already shut down: connecting again would start a new cluster
        return
    try:
        from ray import serve

        serve.delete(APP_NAME)
    except Exception:  # the cluster may be gone meanwhile
        log.debug("could not delete the Serve app", exc_info=True)
