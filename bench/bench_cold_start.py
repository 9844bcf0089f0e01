"""Cold start to the first image: a fresh process, a real-size SD 1.5 single file (random weights,
built once from configs/, no download), model load plus the first job.

    python -m bench.bench_cold_start                  # CUDA: 512x512, 20 steps, fp16; CPU: 64x64, 1 step
    python -m bench.bench_cold_start --size 512 --steps 20

Each mode runs in its own new process (the file stays in the OS page cache between them, as after
a first launch) with the hash cache removed, so the sha256 is computed every time:

    overlapped   what the app does: the sha256 is read beside the load (modules/models/registry.py)
    hash-first   the sha256 before the load (how the app did it before)
    no-hashing   --no-hashing: no sha256 at all (the floor)

Prints per mode: seconds for imports + services, the model load (with its hash), the first job, and
the total from the process's start to the first image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path("tmp/bench_cold")
CHECKPOINT = ROOT / "models" / "Stable-diffusion" / "sd15-random.safetensors"
MODES = ("overlapped", "hash-first", "no-hashing")


def build_checkpoint() -> None:
    if CHECKPOINT.exists():
        return
    import torch

    from tests.checkpoint_factory import make_checkpoint

    CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    print(f"building {CHECKPOINT} (real SD 1.5 shapes, fp16, random weights)...", flush=True)
    make_checkpoint(CHECKPOINT, "sd1", size="real", dtype=torch.float16)


def child(mode: str, size: int, steps: int) -> None:
    """One cold start, measured from this process's start (read from /proc)."""
    started = _process_start()
    from modules.app_factory import create_context
    from modules.cmd_args import parse_args
    from modules.generation.request import GenerationRequest

    flags = ["--data-dir", str(ROOT.resolve()), "--nowebui", "--ckpt", CHECKPOINT.name]
    ctx = create_context(parse_args(flags + (["--no-hashing"] if mode == "no-hashing" else [])))
    services = time.time()
    if mode == "hash-first":
        ctx.registry.catalog.ensure_hash(ctx.registry.current())
    model = ctx.registry.get()
    loaded = time.time()
    ctx.queue.run(GenerationRequest(prompt="a red circle", steps=steps, width=size, height=size, seed=1,
                                    save_images=False))
    done = time.time()
    print(json.dumps({"mode": mode, "services_s": services - started, "load_s": loaded - services,
                      "first_job_s": done - loaded, "total_s": done - started, "title": model.title}))
    ctx.queue.shutdown()


def _process_start() -> float:
    """Wall-clock time this process started (Linux), so imports count too."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - uptime + start_ticks / ticks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=None, help="default: 512 on CUDA, 64 on a CPU")
    ap.add_argument("--steps", type=int, default=None, help="default: 20 on CUDA, 1 on a CPU")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    size = args.size or (512 if cuda else 64)
    steps = args.steps or (20 if cuda else 1)
    if args.child:
        child(args.child, size, steps)
        return
    build_checkpoint()
    device = torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores, {platform.machine()})"
    print(f"device: {device}; checkpoint: {CHECKPOINT.stat().st_size / 2**30:.2f} GiB; {size}x{size}, {steps} steps")
    print(f"command: python -m bench.bench_cold_start {shlex.join(sys.argv[1:])}")
    print(f"{'mode':<12} {'imports+services':>16} {'load(+hash)':>12} {'first job':>10} {'total':>8}")
    for mode in args.modes:
        (ROOT / "cache.json").unlink(missing_ok=True)  # the sha256 is computed again
        out = subprocess.run([sys.executable, "-m", "bench.bench_cold_start", "--child", mode, "--size", str(size),
                              "--steps", str(steps)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{mode:<12} {row['services_s']:>16.2f} {row['load_s']:>12.2f} {row['first_job_s']:>10.2f} "
              f"{row['total_s']:>8.2f}")


if __name__ == "__main__":
    main()
