"""Per-request overhead of the HTTP API against plain diffusers, same weights and settings.

    python -m bench.bench_api [--steps 20] [--size 64] [--runs 10]

Starts the real app (registry, queue, engine, FastAPI) on the embedded model and serves it with
uvicorn on a loopback port, as tests/api/conftest.py does, then times `POST /sdapi/v1/txt2img`
(PNG in base64, as clients get it) against the same txt2img done by a plain diffusers pipeline
loaded from the same folder (Euler a, CFG 7, same seed, PIL image out). Runs alternate so drift
hits both alike; prints medians, where the API's time went (the engine's own `info.timings`
versus everything around it) and the ratio API/diffusers (goal: <= 1.10).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time

import httpx
import torch
import uvicorn
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

from modules.cmd_args import parse_args
from modules.paths import EMBEDDED_MODEL_DIR

PROMPT = "a red circle on a blue background"


class _LoopbackServer:
    """uvicorn in a thread on a socket we bound, so the port is known before it starts."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "_LoopbackServer":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()

    from modules.api import create_api_app
    from modules.app_factory import create_context

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = StableDiffusionPipeline.from_pretrained(EMBEDDED_MODEL_DIR, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    body = {"prompt": PROMPT, "seed": 1, "steps": args.steps, "cfg_scale": 7.0, "sampler_name": "Euler a",
            "width": args.size, "height": args.size}

    def run_diffusers() -> float:
        start = time.perf_counter()
        pipe(PROMPT, num_inference_steps=args.steps, guidance_scale=7.0, height=args.size, width=args.size,
             generator=torch.Generator(device).manual_seed(1))
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as data_dir:
        flags = ["--data-dir", data_dir, "--api", "--nowebui", "--ckpt", EMBEDDED_MODEL_DIR.name]
        ctx = create_context(parse_args(flags + ([] if device == "cuda" else ["--use-cpu"])))
        try:
            with _LoopbackServer(create_api_app(ctx)) as server, httpx.Client(base_url=server.url,
                                                                             timeout=600) as client:
                engine_s: list[float] = []

                def run_api() -> float:
                    start = time.perf_counter()
                    response = client.post("/sdapi/v1/txt2img", json=body)
                    took = time.perf_counter() - start
                    response.raise_for_status()
                    engine_s.append(json.loads(response.json()["info"])["timings"]["total_s"])
                    return took

                run_api(), run_diffusers()  # warm-up: model load, allocator, caches
                engine_s.clear()
                api_s, plain_s = [], []
                for _ in range(args.runs):
                    api_s.append(run_api())
                    plain_s.append(run_diffusers())
        finally:
            ctx.queue.shutdown()

    a, d, e = statistics.median(api_s), statistics.median(plain_s), statistics.median(engine_s)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}, model: {EMBEDDED_MODEL_DIR.name}, size: {args.size}, steps: {args.steps}, "
          f"runs: {args.runs}")
    print(f"api       median {a:.4f} s  (engine.generate {e:.4f} s, around it {a - e:.4f} s)")
    print(f"diffusers median {d:.4f} s")
    print(f"ratio api/diffusers: {a / d:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
