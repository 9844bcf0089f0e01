"""Command-line flags, named as A1111 names them so users' habits and scripts carry over."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence


# flag -> the models/ subfolder it replaces (A1111's names for both)
MODEL_DIR_FLAGS = {
    "esrgan-models-path": "ESRGAN",
    "realesrgan-models-path": "RealESRGAN",
    "swinir-models-path": "SwinIR",
    "scunet-models-path": "ScuNET",
    "dat-models-path": "DAT",
    "gfpgan-models-path": "GFPGAN",
    "codeformer-models-path": "Codeformer",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", description="Stable Diffusion web UI")
    net = p.add_argument_group("network")
    net.add_argument("--listen", action="store_true", help="listen on 0.0.0.0 instead of 127.0.0.1")
    net.add_argument("--server-name", default=None, help="host name to bind (overrides --listen)")
    net.add_argument("--port", type=int, default=7860)
    net.add_argument("--share", action="store_true",
                     help="also make a public gradio.live link (needs the internet; protect it with --gradio-auth)")
    net.add_argument("--autolaunch", action="store_true", help="open the UI in the default browser")
    net.add_argument("--api", action="store_true", help="serve /sdapi/v1 beside the UI")
    net.add_argument("--nowebui", action="store_true", help="serve the API alone")
    net.add_argument("--api-auth", default=None, help="user:pass[,user2:pass2] for the API (default: the --gradio-auth login, if any)")
    net.add_argument("--gradio-auth", default=None, help="user:pass[,user2:pass2] for the UI")
    net.add_argument("--gradio-auth-path", default=None, help="file with user:pass lines or comma lists")
    ui = p.add_argument_group("ui")
    ui.add_argument("--theme", choices=["light", "dark"], default=None)
    ui.add_argument("--data-dir", default=None, help="base folder for models, outputs and settings")
    ui.add_argument("--ui-settings-file", default=None, help="settings file (default config.json)")
    ui.add_argument("--ui-config-file", default=None, help="UI defaults file (default ui-config.json)")
    models = p.add_argument_group("models")
    models.add_argument("--ckpt", default=None, help="checkpoint to load at start")
    models.add_argument("--ckpt-dir", action="append", default=[], help="extra checkpoint folder")
    models.add_argument("--vae-dir", default=None)
    models.add_argument("--no-hashing", action="store_true", help="do not hash checkpoints")
    # A1111's folders for upscalers and face restorers (default: models/<kind>; see Paths.model_dir)
    for flag, kind in MODEL_DIR_FLAGS.items():
        models.add_argument(f"--{flag}", default=None, metavar="DIR", help=f"{kind} models (default models/{kind})")
    perf = p.add_argument_group("performance")
    perf.add_argument("--no-half", action="store_true", help="keep the model in fp32 on CUDA")
    perf.add_argument("--no-half-vae", action="store_true", help="keep the VAE in fp32 on CUDA")
    perf.add_argument("--precision", choices=["auto", "fp16", "bf16", "fp32"], default="auto")
    # attention and layout (A1111's names; see modules/models/speed.py): SDPA unless told otherwise
    perf.add_argument("--opt-sdp-attention", action="store_true",
                      help="PyTorch scaled-dot-product attention (the default)")
    perf.add_argument("--opt-sdp-no-mem-attention", action="store_true",
                      help="SDPA without the memory-efficient kernel (repeatable images on CUDA)")
    perf.add_argument("--disable-opt-split-attention", action="store_true",
                      help="plain matmul+softmax attention (the reference; slowest, most memory)")
    perf.add_argument("--xformers", action="store_true", help="accepted for A1111 habits; SDPA is used")
    perf.add_argument("--opt-channelslast", action="store_true", help="the UNet in channels_last memory layout")
    perf.add_argument("--medvram", action="store_true", help="model CPU offload")
    perf.add_argument("--lowvram", action="store_true", help="sequential CPU offload")
    perf.add_argument("--use-cpu", action="store_true", help="run on the CPU even when CUDA exists")
    perf.add_argument("--compile", action="store_true",
                      help="torch.compile the UNet and VAE decoder (warm-up once per image size and batch size)")
    perf.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune"], default="default",
                      help="torch.compile mode with --compile (reduce-overhead adds CUDA graphs)")
    ext = p.add_argument_group("extensions")
    ext.add_argument("--disable-all-extensions", action="store_true", help="load no extensions at all")
    ext.add_argument("--disable-extra-extensions", action="store_true", help="load only built-in extensions")
    ext.add_argument("--enable-insecure-extension-access", action="store_true",
                     help="allow installing extensions from the UI/API even when listening beyond loopback")
    scale = p.add_argument_group("scale-out (Ray Serve; modules/serve/)")
    scale.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="run jobs on Ray Serve replicas: start a local Ray cluster, or join the one at "
                            "ADDRESS ('auto' or host:port)")
    scale.add_argument("--ray-replicas", type=int, default=None, metavar="N",
                       help="engine replicas (default: one per GPU in the cluster, else 1 CPU replica)")
    scale.add_argument("--ray-config", default=None, metavar="FILE",
                       help="YAML/JSON with Ray Serve deployment options (num_replicas, autoscaling_config, "
                            "ray_actor_options, ...) and save / max_attempts / threads")
    scale.add_argument("--ray-threads", type=int, default=None, metavar="N",
                       help="torch threads per replica (default: the replica's num_cpus)")
    scale.add_argument("--ray-save", choices=["replicas", "frontend"], default=None,
                       help="who writes outputs: the replicas, to the shared outputs folder (default), or this process")
    scale.add_argument("--ray-max-attempts", type=int, default=None, metavar="N",
                       help="runs of a job whose replica dies under it before the client gets an error (default 3)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def parse_credentials(text: str) -> list[tuple[str, str]]:
    """'user:pass,user2:pass2' (commas or newlines) -> [(user, pass), ...]; a bad entry is an error."""
    pairs = []
    for entry in text.replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user:
            raise ValueError(f"credentials must look like user:password, got {entry!r}")
        pairs.append((user, password))
    return pairs
