"""The engine against plain diffusers on real model shapes (random weights from configs/, no download).

    python -m bench.bench_real_shapes                       # CUDA: SD 1.5 at 512² and SDXL at 1024², fp16,
                                                            #   20 steps, batch 1 and 4, 5 runs
                                                            # CPU: SD 1.5 at 128², fp32, 4 steps, batch 1 and 2, 2 runs
    python -m bench.bench_real_shapes --family sdxl --size 1024 --steps 20 --batch 1 4 --runs 5
    python -m bench.bench_real_shapes --attention classic --channels-last --precision bf16

Both sides use one pipeline object (the same weights), Euler a, CFG 7, the same size, steps and
seeds; the engine runs through the real `Engine` on a `LoadedModel` of that pipeline, and runs
alternate (after one warm-up each) so drift in the machine's load hits both alike. Per batch size:
seconds per image (median), it/s (denoising steps per second: from the first UNet call to the first
VAE decoder call of a job, as A1111's progress bar counts them), peak memory (CUDA:
torch.cuda.max_memory_allocated, weights included; CPU: n/a, the process's peak RSS is printed
once), and engine/diffusers ratios. Every line carries the hardware; the header the exact command.
"""

from __future__ import annotations

import argparse
import gc
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from diffusers import EulerAncestralDiscreteScheduler

from bench.common import OneModel
from bench.random_models import NATIVE_SIZE, build_random_model
from modules.generation.request import GenerationRequest
from modules.models.options import ModelOptions
from modules.models.speed import ATTENTIONS, SDPA, apply_speed_options
from modules.paths import Paths
from modules.processing.engine import Engine
from modules.settings import SettingsStore

PROMPT = "a photograph of an astronaut riding a horse"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Sample:
    seconds: float  # the whole job
    it_s: float  # denoising steps per second
    peak_mib: Optional[float]  # CUDA only


class StepClock:
    """Times the denoising loop of one job from hooks on the shared modules: the first UNet call
    starts it and the first VAE decoder call ends it (one device sync at each end, which the job
    does there anyway), whichever side runs the job."""

    def __init__(self, pipe, cuda: bool) -> None:
        self.cuda = cuda
        self.start: Optional[float] = None
        self.end: Optional[float] = None
        pipe.unet.register_forward_pre_hook(self._on_unet)
        pipe.vae.decoder.register_forward_pre_hook(self._on_decode)

    def reset(self) -> None:
        self.start = self.end = None

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _on_unet(self, module, args) -> None:
        if self.start is None:
            self.start = self._now()

    def _on_decode(self, module, args) -> None:
        if self.end is None and self.start is not None:
            self.end = self._now()

    def it_s(self, steps: int) -> float:
        if self.start is None or self.end is None:
            return float("nan")
        return steps / (self.end - self.start)


def measure(run: Callable[[], object], clock: StepClock, steps: int, cuda: bool) -> Sample:
    clock.reset()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return Sample(seconds, clock.it_s(steps), peak)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def peak_rss_gib() -> Optional[float]:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except (ImportError, AttributeError):
        return None


def fmt_mib(value: Optional[float]) -> str:
    return "n/a (CPU)" if value is None else f"{value:.0f} MiB"


def bench_family(family: str, args, device: torch.device, dtype: torch.dtype, hw: str) -> None:
    cuda = device.type == "cuda"
    size = args.size or (NATIVE_SIZE[family] if cuda else 128)
    started = time.perf_counter()
    built = build_random_model(family, device, dtype, seed=args.seed)
    apply_speed_options(built.pipe, ModelOptions(device=device.type, attention=args.attention,
                                                 channels_last=args.channels_last))
    pipe = built.pipe
    print(f"[{hw}] {family}: {built.params / 1e6:.0f} M parameters, random weights built in "
          f"{time.perf_counter() - started:.1f} s; {size}x{size}, {args.steps} steps, CFG 7, Euler a, "
          f"{str(dtype).replace('torch.', '')}, attention {args.attention}, channels_last "
          f"{'on' if args.channels_last else 'off'}", flush=True)
    engine = Engine(OneModel(built.model), SettingsStore(None), Paths())
    plain_scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    clock = StepClock(pipe, cuda)
    for batch in args.batch:
        request = GenerationRequest(prompt=PROMPT, seed=1, steps=args.steps, cfg_scale=7.0, sampler_name="Euler a",
                                    width=size, height=size, batch_size=batch, save_images=False)
        warnings: list[str] = []

        def run_engine() -> None:
            warnings[:] = engine.generate(request).warnings

        def run_diffusers() -> None:
            pipe.scheduler = plain_scheduler
            generator = [torch.Generator(device).manual_seed(1 + i) for i in range(batch)]
            pipe(PROMPT, num_inference_steps=args.steps, guidance_scale=7.0, height=size, width=size,
                 num_images_per_prompt=batch, generator=generator)

        run_engine(), run_diffusers()  # warm-up: allocator, kernels, caches
        eng: list[Sample] = []
        dif: list[Sample] = []
        for _ in range(args.runs):
            eng.append(measure(run_engine, clock, args.steps, cuda))
            dif.append(measure(run_diffusers, clock, args.steps, cuda))
        e_s, d_s = (statistics.median(s.seconds for s in xs) for xs in (eng, dif))
        e_it, d_it = (statistics.median(s.it_s for s in xs) for xs in (eng, dif))
        e_peak = max(s.peak_mib for s in eng) if cuda else None
        d_peak = max(s.peak_mib for s in dif) if cuda else None
        print(f"[{hw}] {family} {size}x{size} batch {batch}: "
              f"engine {e_s / batch:.3f} s/image, {e_it:.2f} it/s, peak {fmt_mib(e_peak)} | "
              f"diffusers {d_s / batch:.3f} s/image, {d_it:.2f} it/s, peak {fmt_mib(d_peak)} | "
              f"ratio engine/diffusers {e_s / d_s:.3f} time (goal <= 1.05), {e_it / d_it:.3f} it/s", flush=True)
        for w in warnings:
            print(f"    engine warning: {w}")


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", nargs="+", choices=["sd1", "sdxl"], default=None,
                    help="default: sd1 and sdxl on CUDA, sd1 on a CPU")
    ap.add_argument("--size", type=int, default=None, help="default: native (512 / 1024) on CUDA, 128 on a CPU")
    ap.add_argument("--steps", type=int, default=None, help="default: 20 on CUDA, 4 on a CPU")
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="default: 1 4 on CUDA, 1 2 on a CPU")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per side (default: 5 on CUDA, 2 on a CPU)")
    ap.add_argument("--precision", choices=list(DTYPES), default=None, help="default: fp16 on CUDA, fp32 on a CPU")
    ap.add_argument("--attention", choices=list(ATTENTIONS), default=SDPA)
    ap.add_argument("--channels-last", action="store_true", help="the UNet in channels_last layout")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    args.family = args.family or (["sd1", "sdxl"] if cuda else ["sd1"])
    args.steps = args.steps or (20 if cuda else 4)
    args.batch = args.batch or ([1, 4] if cuda else [1, 2])
    args.runs = args.runs or (5 if cuda else 2)
    dtype = DTYPES[args.precision or ("fp16" if cuda else "fp32")]
    hw = hardware(device)
    command = "python -m bench.bench_real_shapes" + ("" if argv is None and len(sys.argv) < 2 else " ")
    command += shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"command: {command.strip()}")
    print(f"hardware: {hw}; torch {torch.__version__}, diffusers {__import__('diffusers').__version__}")
    with torch.inference_mode():
        for family in args.family:
            bench_family(family, args, device, dtype, hw)
            gc.collect()  # the family's model is gone with bench_family's frame: free it before the next
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if not cuda:
        rss = peak_rss_gib()
        print(f"[{hw}] peak memory: n/a on a CPU (process peak RSS {rss:.1f} GiB, both sides and the weights)"
              if rss is not None else f"[{hw}] peak memory: n/a on a CPU")


if __name__ == "__main__":
    main()
