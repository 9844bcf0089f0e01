"""Shared by the two outpainting scripts: how far the canvas grows on each side, the noise mk2
fills the new area with, and putting the original pixels back exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

DIRECTIONS = ("left", "right", "up", "down")
STEP = 8  # the app's size step (A1111 rounds the canvas to 64; every multiple of 8 samples here)


@dataclass(frozen=True)
class Expansion:
    left: int
    right: int
    up: int
    down: int
    width: int  # the canvas
    height: int

    @property
    def sides(self) -> list[tuple[str, int]]:
        """The sides that grow, in A1111's order (left, right, up, down)."""
        return [(name, px) for name, px in zip(DIRECTIONS, (self.left, self.right, self.up, self.down)) if px > 0]


def _axis(size: int, before: int, after: int) -> tuple[int, int, int]:
    """A1111's split of the rounded canvas between the two sides of one axis: what rounding to the
    size step adds goes to the growing sides in proportion; when neither grows it goes to the second
    side (right / down), so a picture that is not a multiple of 8 still samples."""
    total = math.ceil((size + before + after) / STEP) * STEP
    if before > 0:
        before = before * (total - size) // (before + after)
    return before, total - size - before, total


def expansion(width: int, height: int, pixels: int, directions: Sequence[str]) -> Expansion:
    chosen = set(directions)
    left, right, canvas_w = _axis(width, pixels if "left" in chosen else 0, pixels if "right" in chosen else 0)
    up, down, canvas_h = _axis(height, pixels if "up" in chosen else 0, pixels if "down" in chosen else 0)
    return Expansion(left, right, up, down, canvas_w, canvas_h)


def keep_original(canvas: Image.Image, original: Image.Image, exp: Expansion) -> Image.Image:
    """The original picture pasted back over its region: outpainting never changes its pixels."""
    out = canvas.convert("RGB").copy()
    out.paste(original.convert("RGB"), (exp.left, exp.up))
    return out


# ---- mk2's fill: noise shaped like the picture's spectrum, coloured like its pixels
def _spectrum(data: np.ndarray) -> np.ndarray:
    return np.fft.ifftshift(np.fft.fft2(np.fft.fftshift(data, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1))


def _inverse(data: np.ndarray) -> np.ndarray:
    return np.fft.ifftshift(np.fft.ifft2(np.fft.fftshift(data, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1))


def _match_histogram(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each channel of `values` (n, c) remapped so its distribution is that of `reference` (m, c)."""
    out = np.empty_like(values)
    for c in range(values.shape[1]):
        order = np.argsort(values[:, c], kind="stable")
        quantiles = np.empty(len(order))
        quantiles[order] = (np.arange(len(order)) + 0.5) / len(order)
        ref = np.sort(reference[:, c])
        out[:, c] = np.interp(quantiles, (np.arange(len(ref)) + 0.5) / len(ref), ref)
    return out


def matched_noise(image: np.ndarray, mask: np.ndarray, noise_q: float = 1.0,
                  color_variation: float = 0.05) -> np.ndarray:
    """The g-diffuser fill A1111's Outpainting mk2 uses: noise (fixed generator, so only the job's
    seed varies the result) whose spectrum takes the known area's magnitudes to the power `noise_q`
    (lower = more detail) and phases, then recoloured to the known pixels' histogram. `image` is
    (h, w, 3) in 0..1, `mask` (h, w) in 0..1 with 1 = to fill; known pixels are returned as they are."""
    h, w, channels = image.shape
    m = mask[..., None]
    known = m[..., 0] < 1e-3
    fill = m[..., 0] > 1e-6
    windowed = image * (1.0 - m)
    windowed = windowed / max(float(windowed.max()), 1e-6) + float(image.mean()) * m
    source = _spectrum(windowed)
    magnitude = np.abs(source)
    phase = source / np.maximum(magnitude, 1e-12)

    rng = np.random.default_rng(0)
    noise = rng.random((h, w, channels))
    grey = noise.mean(axis=2, keepdims=True)
    noise = noise * color_variation + (1.0 - color_variation) * grey
    scale = min(w, h)
    fx = (np.arange(w) / w * 2.0 - 1.0) * (w / scale)
    fy = (np.arange(h) / h * 2.0 - 1.0) * (h / scale)
    window = (1.0 / ((fy[:, None] ** 2 + 1.0) * (fx[None, :] ** 2 + 1.0)))  # a soft low-pass
    noise = np.real(_inverse(_spectrum(noise) * window[..., None]))
    shaped = np.abs(_spectrum(noise)) ** 2 * magnitude ** noise_q * phase
    shaped = np.real(_inverse(shaped))
    shaped -= shaped.min()
    shaped /= max(float(shaped.max()), 1e-12)
    if fill.any() and known.any():
        shaped[fill] = _match_histogram(shaped[fill], image[known])
    return np.clip(image * (1.0 - m) + shaped * m, 0.0, 1.0)


__all__ = ["DIRECTIONS", "Expansion", "expansion", "keep_original", "matched_noise"]
