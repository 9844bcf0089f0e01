"""How the Ray Serve deployment is shaped: flags first, then an optional config file.

The config file (YAML or JSON) holds Ray Serve's own deployment options (`num_replicas`,
`autoscaling_config`, `ray_actor_options`, `max_ongoing_requests` is fixed at 1: one job per
replica at a time) plus this app's keys: `save` ("replicas" or "frontend"), `max_attempts`,
`threads` (torch threads per replica) and `address`. Flags given on the command line win.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Optional

SaveMode = Literal["replicas", "frontend"]
APP_KEYS = ("save", "max_attempts", "threads", "address")
# Serve options a config file may set; others (e.g. max_ongoing_requests) would break the one-job rule.
SERVE_KEYS = ("num_replicas", "autoscaling_config", "ray_actor_options", "health_check_period_s",
              "health_check_timeout_s", "graceful_shutdown_timeout_s", "max_replicas_per_node",
              "max_queued_requests")


class ServeConfigError(ValueError):
    """A bad --ray-config file or flag value (names the key)."""


@dataclass(frozen=True)
class ServeConfig:
    address: Optional[str] = None  # None: start a local cluster; "auto" or host:port: join one
    num_replicas: Optional[int] = None  # None: one per GPU in the cluster, else 1 CPU replica
    autoscaling_config: Optional[dict[str, Any]] = None  # Ray Serve's own autoscaling options
    ray_actor_options: dict[str, Any] = field(default_factory=dict)  # num_gpus / num_cpus per replica
    threads: int = 0  # torch threads per CPU replica; 0: its num_cpus
    save: SaveMode = "replicas"  # who writes outputs: the replicas (a shared folder) or the front end
    max_attempts: int = 3  # runs of one job when replicas die under it
    serve_options: dict[str, Any] = field(default_factory=dict)  # other Serve deployment options

    @property
    def max_replicas(self) -> Optional[int]:
        """How many jobs can run at once (the front end's worker count); None: not known yet."""
        if self.autoscaling_config:
            return int(self.autoscaling_config.get("max_replicas", 1))
        return self.num_replicas

    def with_cluster(self, gpus: float, cpus: float) -> "ServeConfig":
        """Fill the defaults that depend on the cluster: replicas and what each one takes."""
        options = dict(self.ray_actor_options)
        if "num_gpus" not in options:
            options["num_gpus"] = 1 if gpus >= 1 else 0
        options.setdefault("num_cpus", 1)
        replicas = self.num_replicas
        if replicas is None and not self.autoscaling_config:
            replicas = int(gpus) if options["num_gpus"] else 1
        threads = self.threads or max(1, int(options["num_cpus"]))
        return replace(self, ray_actor_options=options, num_replicas=replicas, threads=threads)

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options`."""
        options: dict[str, Any] = {**self.serve_options, "ray_actor_options": self.ray_actor_options,
                                   "max_ongoing_requests": 1}
        if self.autoscaling_config:
            options["autoscaling_config"] = self.autoscaling_config
        else:
            options["num_replicas"] = self.num_replicas
        return options


def read_config_file(path: Path) -> dict[str, Any]:
    import yaml  # Ray depends on PyYAML; YAML also reads JSON

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ServeConfigError(f"--ray-config {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ServeConfigError(f"--ray-config {path}: expected a mapping of option names to values")
    unknown = sorted(set(data) - set(APP_KEYS) - set(SERVE_KEYS))
    if unknown:
        raise ServeConfigError(f"--ray-config {path}: unknown keys {unknown}; known: "
                               f"{sorted(APP_KEYS + SERVE_KEYS)}")
    return data


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    data = read_config_file(Path(args.ray_config)) if getattr(args, "ray_config", None) else {}
    flags = {"address": _address(args), "num_replicas": getattr(args, "ray_replicas", None),
             "threads": getattr(args, "ray_threads", None), "save": getattr(args, "ray_save", None),
             "max_attempts": getattr(args, "ray_max_attempts", None)}
    merged = {**data, **{k: v for k, v in flags.items() if v is not None}}
    config = ServeConfig(
        address=merged.get("address"), num_replicas=merged.get("num_replicas"),
        autoscaling_config=merged.get("autoscaling_config"),
        ray_actor_options=dict(merged.get("ray_actor_options") or {}),
        threads=int(merged.get("threads") or 0), save=merged.get("save", "replicas"),
        max_attempts=int(merged.get("max_attempts", 3)),
        serve_options={k: merged[k] for k in SERVE_KEYS
                       if k in merged and k not in ("num_replicas", "autoscaling_config", "ray_actor_options")})
    _check(config)
    return config


def _address(args: argparse.Namespace) -> Optional[str]:
    value = getattr(args, "ray", None)
    return None if value in (None, "", "local") else value


def _check(config: ServeConfig) -> None:
    if config.save not in ("replicas", "frontend"):
        raise ServeConfigError(f"save: {config.save!r} is neither 'replicas' nor 'frontend'")
    if config.num_replicas is not None and config.num_replicas < 1:
        raise ServeConfigError(f"num_replicas: {config.num_replicas} (at least 1)")
    if config.max_attempts < 1:
        raise ServeConfigError(f"max_attempts: {config.max_attempts} (at least 1)")
    if config.threads < 0:
        raise ServeConfigError(f"threads: {config.threads} (0 = the replica's num_cpus)")
