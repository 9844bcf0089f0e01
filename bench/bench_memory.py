"""Peak GPU memory and time per memory mode (none / --medvram / --lowvram), one job each.

    python -m bench.bench_memory [--ckpt NAME] [--ckpt-dir DIR] [--steps 20] [--size N]

Loads through the real ModelRegistry, as the app does, so the flags' effect is what users get.
Needs CUDA: peak memory is torch.cuda.max_memory_allocated, which a CPU run cannot report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from modules.models.options import MemoryMode, ModelOptions
from modules.models.registry import ModelRegistry
from modules.paths import Paths
from modules.processing.engine import Engine
from modules.generation.request import GenerationRequest
from modules.settings import SettingsStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=None, help="checkpoint title or name (default: the registry's default)")
    ap.add_argument("--ckpt-dir", type=Path, action="append", default=[])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: peak GPU memory per mode needs a GPU; nothing measured")
        return
    paths = Paths(ckpt_dirs=tuple(args.ckpt_dir))
    request = GenerationRequest(prompt="a red circle on a blue background", seed=1, steps=args.steps,
                                width=args.size, height=args.size, save_images=False)
    print(f"device: {torch.cuda.get_device_name()}")
    for mode in MemoryMode:
        registry = ModelRegistry(paths, ModelOptions(memory_mode=mode, default_checkpoint=args.ckpt))
        engine = Engine(registry, SettingsStore(None), paths)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        engine.generate(request)  # warm-up and load
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        engine.generate(request)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"{mode.value:8s} peak {peak:8.0f} MiB   {seconds:6.2f} s/job")
        registry.unload()


if __name__ == "__main__":
    main()
