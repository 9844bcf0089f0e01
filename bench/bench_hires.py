"""Hires fix against plain txt2img at the target size, same model, sampler, steps and seed.

    python -m bench.bench_hires [--model DIR] [--size N] [--scale 2] [--steps 20] [--hr-steps 0]
                                [--denoise 0.5] [--runs 5] [--upscalers Latent Lanczos]

DIR is a diffusers-format folder (default: the embedded model, 64 px: 64 -> 128). For each
upscaler, prints the median seconds of a hires job (first pass at SIZE, second pass at SIZE x
SCALE) and of a plain txt2img at SIZE x SCALE, and their ratio. A hires job runs `steps` first-pass
steps plus `hr-steps or steps` second-pass steps, so at the default denoise it does more UNet work
than the plain job, half of it at a quarter of the pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.common import OneModel, alternating_medians, load_bench_model
from modules.generation.request import GenerationRequest, HiresOptions
from modules.paths import EMBEDDED_MODEL_DIR, Paths
from modules.processing.engine import Engine
from modules.settings import SettingsStore

PROMPT = "a red circle on a blue background"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR)
    ap.add_argument("--size", type=int, default=None, help="first pass size; default: the model's native size")
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--hr-steps", type=int, default=0, help="0 = the first pass's steps")
    ap.add_argument("--denoise", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--upscalers", nargs="+", default=["Latent", "Lanczos"])
    ap.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    args = ap.parse_args()

    loaded = load_bench_model(args.model, args.fp16, args.size)
    device, size = loaded.device, loaded.size
    engine = Engine(OneModel(loaded.model), SettingsStore(None), Paths())
    target = int(size * args.scale) // 8 * 8
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}, dtype: {loaded.pipe.dtype}, model: {args.model}, {size} -> {target}, "
          f"steps: {args.steps} + {args.hr_steps or args.steps} at denoise {args.denoise}, runs: {args.runs}")
    base = dict(prompt=PROMPT, seed=1, steps=args.steps, sampler_name="Euler a", save_images=False)
    plain = GenerationRequest(**base, width=target, height=target)
    for upscaler in args.upscalers:
        hires = GenerationRequest(**base, width=size, height=size, denoising_strength=args.denoise,
                                  hires=HiresOptions(scale=args.scale, upscaler=upscaler,
                                                     second_pass_steps=args.hr_steps))
        h, p = alternating_medians(lambda: engine.generate(hires), lambda: engine.generate(plain), args.runs)
        print(f"{upscaler}: hires {h:.4f} s, plain txt2img at {target}x{target} {p:.4f} s, ratio hires/plain {h / p:.3f}")


if __name__ == "__main__":
    main()
