"""Engine overhead against plain diffusers, same weights and settings, measured in one run.

    python -m bench.bench_engine [--model DIR] [--steps 20] [--size N] [--runs 5] [--batch 1 4] [--per-image]

DIR is a diffusers-format folder (default: the embedded model). Both sides use the same pipeline
object, sampler (Euler a), CFG, size and seed; runs alternate so drift hits both alike. For each
batch size, prints the median seconds per image of each and the ratio engine/diffusers (goal:
≤ 1.05). `--per-image` measures the `batch_per_image` setting (one UNet call and one VAE decode
per image, so image i equals the lone job).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import EulerAncestralDiscreteScheduler

from bench.common import OneModel, alternating_medians, load_bench_model
from modules.paths import EMBEDDED_MODEL_DIR, Paths
from modules.processing.engine import Engine
from modules.generation.request import GenerationRequest
from modules.settings import Options, SettingsStore

PROMPT = "a red circle on a blue background"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=None, help="default: the model's native size")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes to measure")
    ap.add_argument("--per-image", action="store_true", help="the batch_per_image setting on")
    ap.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    args = ap.parse_args()

    loaded = load_bench_model(args.model, args.fp16, args.size)
    pipe, model, device, size = loaded.pipe, loaded.model, loaded.device, loaded.size
    engine = Engine(OneModel(model), SettingsStore(None, Options(batch_per_image=args.per_image)), Paths())
    plain_scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}, dtype: {pipe.dtype}, model: {args.model}, size: {size}, steps: {args.steps}, "
          f"runs: {args.runs}, batch_per_image: {args.per_image}")
    for batch in args.batch:
        request = GenerationRequest(prompt=PROMPT, seed=1, steps=args.steps, cfg_scale=7.0, sampler_name="Euler a",
                                    width=size, height=size, batch_size=batch, save_images=False)

        def run_engine() -> None:
            engine.generate(request)

        def run_diffusers() -> None:
            pipe.scheduler = plain_scheduler
            generator = [torch.Generator(device).manual_seed(1 + i) for i in range(batch)]
            pipe(PROMPT, num_inference_steps=args.steps, guidance_scale=7.0, height=size, width=size,
                 num_images_per_prompt=batch, generator=generator)

        e, d = alternating_medians(run_engine, run_diffusers, args.runs)
        print(f"batch {batch}: engine {e / batch:.4f} s/image, diffusers {d / batch:.4f} s/image, "
              f"ratio engine/diffusers {e / d:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
