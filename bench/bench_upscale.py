"""Seconds for a x4 upscale of a 512x512 image: a real-size Real-ESRGAN x4plus (RRDBNet, 64
features, 23 blocks, random weights, the release's file layout) and Lanczos, through the app's
upscaler registry (spandrel, tiles from the ESRGAN_tile setting).

    python -m bench.bench_upscale [--size 512] [--scale 4] [--runs 3] [--tile 192] [--overlap 8] [--fp16]

Runs on CUDA when there is one (fp16 with --fp16), else on the CPU with torch's thread count
(OMP_NUM_THREADS). The model is loaded once (with a small warm-up image) before timing; prints
the load time and the median seconds of each upscaler.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from PIL import Image

from bench.common import timed
from modules.paths import Paths
from modules.postprocess.services import Postprocessors
from modules.settings import SettingsStore
from tests.upscaler_files import realesrgan_rrdbnet, write_model

MODEL = "R-ESRGAN 4x+"


def test_image(size: int) -> Image.Image:
    """A photograph (scikit-image's astronaut, offline) resized to size x size; noise without it."""
    try:
        from skimage import data

        return Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.BICUBIC)
    except ImportError:
        return Image.effect_noise((size, size), 64).convert("RGB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--scale", type=float, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tile", type=int, default=192, help="ESRGAN_tile (0 = whole image)")
    ap.add_argument("--overlap", type=int, default=8, help="ESRGAN_tile_overlap")
    ap.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        write_model(data / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth",
                    realesrgan_rrdbnet(scale=4, num_feat=64, num_block=23, num_grow_ch=32))
        settings = SettingsStore(None)
        settings.update({"ESRGAN_tile": args.tile, "ESRGAN_tile_overlap": args.overlap})
        post = Postprocessors(Paths(data_dir=data), settings, half=args.fp16)
        registry, device = post.upscalers, post.device
        image = test_image(args.size)

        load_s = timed(lambda: registry.upscale(test_image(32), args.scale, MODEL))
        results = {}
        for name in (MODEL, "Lanczos"):
            runs = [timed(lambda: registry.upscale(image, args.scale, name)) for _ in range(args.runs)]
            results[name] = statistics.median(runs)

    out = f"{round(args.size * args.scale)}x{round(args.size * args.scale)}"
    print(f"device={device} threads={torch.get_num_threads()} fp16={args.fp16} tile={args.tile} "
          f"overlap={args.overlap} {args.size}x{args.size} -> {out}, median of {args.runs}")
    print(f"  model load + warm-up: {load_s:.2f} s")
    for name, seconds in results.items():
        print(f"  {name:<14} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
