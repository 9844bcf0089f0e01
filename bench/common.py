"""What the benchmarks share: the embedded model loaded once as both a plain diffusers pipeline and
the engine's `LoadedModel` (same weights, so the ratios compare like with like)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from diffusers import StableDiffusionPipeline

from modules.models.loaded import LoadedModel, ModelFamily


class OneModel:
    """A ModelProvider that always hands out the one model."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def get(self, checkpoint=None, vae=None) -> LoadedModel:
        return self.model


@dataclass(frozen=True)
class BenchModel:
    pipe: StableDiffusionPipeline
    model: LoadedModel
    device: str
    size: int


def load_bench_model(path: Path, fp16: bool = False, size: Optional[int] = None) -> BenchModel:
    """The pipeline on the GPU when there is one, and the same pipe wrapped for the engine."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if fp16 and device == "cuda" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(path, dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    size = size or pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    model = LoadedModel(title=Path(path).name, name=Path(path).name, family=ModelFamily.SD1, pipe=pipe,
                        native_size=size)
    return BenchModel(pipe=pipe, model=model, device=device, size=size)


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call, with CUDA's queued work included."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alternating_medians(run_a: Callable[[], object], run_b: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median seconds of each, alternating runs after one warm-up of each (allocator, kernels,
    caches), so drift in the machine's load hits both alike."""
    run_a(), run_b()
    a, b = [], []
    for _ in range(runs):
        a.append(timed(run_a))
        b.append(timed(run_b))
    return statistics.median(a), statistics.median(b)
