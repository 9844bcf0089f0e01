"""Cost of ControlNet units in a job: no ControlNet, one unit and two units, measured in one run
through the real engine and the built-in controlnet extension, with plain diffusers
(StableDiffusionPipeline, StableDiffusionControlNetPipeline with one ControlNetModel and with a
MultiControlNetModel of two) measured alongside as the reference.

    python -m bench.bench_controlnet [--model DIR] [--controlnet DIR] [--steps 20] [--runs 5]
                                     [--batches 1 4] [--size N] [--fp16]

DIR is a diffusers-format model folder (default: the embedded model). The ControlNet is a diffusers
folder (default: the embedded model's, models/embedded/ControlNet/control_shapes64_silhouette; when
absent, a random-weight ControlNet made from the model's UNet as ControlNetModel.from_unet does).
Units use module "none" with a ready control map, so the figures are the model's cost, not a
preprocessor's. All jobs: same prompt, seed, sampler (Euler a), steps and CFG 7. Runs alternate over
the conditions so drift hits all alike; prints median seconds per job and the ratios to no control.
"""

from __future__ import annotations

import argparse
import base64
import io
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from bench.common import OneModel, load_bench_model, timed
from modules.cmd_args import parse_args
from modules.extensions.runner import ExtensionSet
from modules.extensions.startup import load_extensions
from modules.generation.request import GenerationRequest
from modules.paths import EMBEDDED_MODEL_DIR, REPO_ROOT, Paths
from modules.processing.engine import Engine
from modules.settings import SettingsStore

PROMPT = "a red circle on a blue background"
EMBEDDED_CONTROLNET = REPO_ROOT / "models" / "embedded" / "ControlNet" / "control_shapes64_silhouette"


def control_map(size: int, shift: int = 0) -> Image.Image:
    """A white disc on black (a silhouette map), `shift` pixels right of centre."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2 - shift) ** 2 <= (size / 4) ** 2
    return Image.fromarray((disc * 255).astype(np.uint8)).convert("RGB")


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_random_controlnet(pipe, folder: Path) -> None:
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    cn = ControlNetModel.from_unet(pipe.unet)
    for p in list(cn.controlnet_down_blocks.parameters()) + list(cn.controlnet_mid_block.parameters()):
        torch.nn.init.normal_(p, std=0.02)  # zero convs that are not zero: the residuals do real work
    cn.save_pretrained(folder)


def medians(conditions: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    for fn in conditions.values():  # warm-up: first loads, allocator, kernels
        fn()
    times: dict[str, list[float]] = {name: [] for name in conditions}
    for _ in range(runs):
        for name, fn in conditions.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def report(title: str, result: dict[str, float]) -> None:
    base = result["none"]
    parts = [f"{name} {secs:.4f} s" + ("" if name == "none" else f" (x{secs / base:.3f})") for name, secs in result.items()]
    print(f"  {title}: " + ", ".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR)
    ap.add_argument("--controlnet", type=Path, default=None, help="a diffusers ControlNetModel folder")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--size", type=int, default=None, help="default: the model's native size")
    ap.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    args = ap.parse_args()

    from diffusers import (ControlNetModel, EulerAncestralDiscreteScheduler, MultiControlNetModel,
                           StableDiffusionControlNetPipeline, StableDiffusionPipeline)

    loaded = load_bench_model(args.model, args.fp16, args.size)
    pipe, model, device, size = loaded.pipe, loaded.model, loaded.device, loaded.size
    dtype = pipe.dtype
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        cn_dir = data_dir / "models" / "ControlNet"
        cn_dir.mkdir(parents=True)
        source = args.controlnet or (EMBEDDED_CONTROLNET if (EMBEDDED_CONTROLNET / "config.json").is_file() else None)
        if source is not None:
            shutil.copytree(source, cn_dir / "bench_controlnet")
            what = str(source)
        else:
            write_random_controlnet(pipe, cn_dir / "bench_controlnet")
            what = "random weights, ControlNetModel.from_unet of the model's UNet"

        exts = load_extensions(Paths(data_dir=data_dir), SettingsStore(None), parse_args(["--data-dir", tmp]))
        controlnet_ext = exts.extension_set.get("controlnet")
        engine = Engine(OneModel(model), SettingsStore(None), Paths(data_dir=data_dir),
                        extensions=ExtensionSet([controlnet_ext]))
        title = next(f.title for f in controlnet_ext.library.files if f.name == "bench_controlnet")

        # the reference: plain diffusers pipelines sharing the same UNet, VAE and text encoder
        cn = ControlNetModel.from_pretrained(cn_dir / "bench_controlnet", torch_dtype=dtype, local_files_only=True).to(device)
        parts = dict(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                     scheduler=EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config),
                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        plain = StableDiffusionPipeline(**parts)
        one = StableDiffusionControlNetPipeline(**parts, controlnet=cn)
        two = StableDiffusionControlNetPipeline(**parts, controlnet=MultiControlNetModel([cn, cn]))
        for p in (plain, one, two):
            p.set_progress_bar_config(disable=True)

        name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        print(f"device: {name}, dtype: {dtype}, model: {args.model}, size: {size}, steps: {args.steps}, "
              f"runs: {args.runs}\ncontrolnet: {title} ({what})")
        maps = [control_map(size, 0), control_map(size, size // 8)]

        for batch in args.batches:
            def job(n_units: int) -> GenerationRequest:
                units = [{"enabled": True, "module": "none", "model": title, "weight": 1.0, "image": b64(maps[i]),
                          "resize_mode": "Just Resize"} for i in range(n_units)]
                return GenerationRequest(prompt=PROMPT, seed=1, steps=args.steps, cfg_scale=7.0,
                                         sampler_name="Euler a", width=size, height=size, batch_size=batch,
                                         save_images=False, extensions={"controlnet": {"args": units}} if units else {})

            requests = {k: job(k) for k in (0, 1, 2)}
            for n in (1, 2):  # the units really ran: their infotext is written
                info = engine.generate(requests[n]).infotexts[0]
                assert f"ControlNet {n - 1}:" in info, info

            def run(n: int):
                result = engine.generate(requests[n])
                assert not result.warnings, result.warnings
                return result

            common = dict(prompt=PROMPT, num_inference_steps=args.steps, guidance_scale=7.0, height=size, width=size,
                          num_images_per_prompt=batch, output_type="np")

            def gen():
                return torch.Generator(device).manual_seed(1)

            engine_t = medians({"none": lambda: run(0), "1 unit": lambda: run(1), "2 units": lambda: run(2)}, args.runs)
            ref_t = medians({
                "none": lambda: plain(**common, generator=gen()),
                "1 unit": lambda: one(**common, image=maps[0], generator=gen()),
                "2 units": lambda: two(**common, image=maps, controlnet_conditioning_scale=[1.0, 1.0], generator=gen()),
            }, args.runs)
            print(f"batch {batch}:")
            report("engine + controlnet extension", engine_t)
            report("diffusers reference          ", ref_t)
            for k in ("none", "1 unit", "2 units"):
                print(f"    engine/diffusers {k}: {engine_t[k] / ref_t[k]:.3f}")


if __name__ == "__main__":
    main()
