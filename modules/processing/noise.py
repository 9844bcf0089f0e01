"""Seeds and initial noise, drawn per image so image i of a batch equals a lone job with seed+i.

Each image owns a torch.Generator seeded with its seed: it draws the initial noise first and then
keeps feeding the sampler's per-step noise (ancestral samplers), so batching never mixes streams.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from modules.generation.request import GenerationRequest, RngSource

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class JobSeeds:
    seeds: list[int]  # one per image, in job order
    subseeds: list[int]


def pick_seed(seed: int, rng: random.Random | None = None) -> int:
    """A1111's -1: a random seed; any other value stays."""
    return seed if seed != -1 else (rng or random).randrange(MAX_SEED)


def resolve_seeds(request: GenerationRequest, rng: random.Random | None = None) -> JobSeeds:
    """-1 picks a random seed; image i gets seed + i (and subseed + i), wrapping at 2**32."""
    rng = rng or random.Random()
    seed, subseed = pick_seed(request.seed, rng), pick_seed(request.subseed, rng)
    n = request.n_images
    return JobSeeds(seeds=[(seed + i) % (MAX_SEED + 1) for i in range(n)],
                    subseeds=[(subseed + i) % (MAX_SEED + 1) for i in range(n)])


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors, keeping the noise's norm statistics."""
    low_n = low / low.norm()
    high_n = high / high.norm()
    dot = (low_n * high_n).sum()
    if dot.abs() > 0.9995:  # nearly parallel: the linear blend is exact enough and stable
        return low * (1.0 - t) + high * t
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so) * low + (torch.sin(t * omega) / so) * high


@dataclass(frozen=True)
class NoiseSpec:
    """What shapes the initial noise of one batch, besides the seeds."""

    shape: tuple[int, int, int]  # latent channels, height, width
    subseed_strength: float = 0.0
    resize_from: tuple[int, int] | None = None  # latent (height, width) the seed was first used at
    source: RngSource = RngSource.DEVICE


def generator_device(source: RngSource, device: torch.device) -> torch.device:
    return torch.device("cpu") if source is RngSource.CPU else torch.device(device)


def _randn(shape: tuple[int, ...], seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Generator]:
    gen = torch.Generator(device=device).manual_seed(int(seed))
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32), gen


def _paste_centered(big: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """Put `small` noise in the middle of `big` (cropping it if larger), as 'resize seed from' does."""
    out = big.clone()
    _, bh, bw = big.shape
    _, sh, sw = small.shape
    h, w = min(bh, sh), min(bw, sw)
    ty, tx = (bh - h) // 2, (bw - w) // 2
    sy, sx = (sh - h) // 2, (sw - w) // 2
    out[:, ty:ty + h, tx:tx + w] = small[:, sy:sy + h, sx:sx + w]
    return out


def create_noise(spec: NoiseSpec, seeds: list[int], subseeds: list[int],
                 device: torch.device) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Initial noise [B, C, H, W] (float32, on `device`) and the per-image generators."""
    gen_device = generator_device(spec.source, device)
    noise_shape = spec.shape if spec.resize_from is None else (spec.shape[0], *spec.resize_from)
    images, generators = [], []
    for seed, subseed in zip(seeds, subseeds):
        sub = None
        if spec.subseed_strength > 0:
            sub, _ = _randn(noise_shape, subseed, gen_device)
        noise, gen = _randn(noise_shape, seed, gen_device)
        if sub is not None:
            noise = slerp(spec.subseed_strength, noise, sub)
        if noise_shape != spec.shape:
            full, gen = _randn(spec.shape, seed, gen_device)
            noise = _paste_centered(full, noise)
        images.append(noise)
        generators.append(gen)
    return torch.stack(images).to(device), generators

