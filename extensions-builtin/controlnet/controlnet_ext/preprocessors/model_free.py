"""The modules that need no weights, as sd-webui-controlnet computes them. Each takes a
PreprocessInput whose resolution and thresholds the registry has already resolved to numbers."""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from controlnet_ext.preprocessors.imaging import (
    gray_to_rgb,
    resize_short_side,
    scaled_and_padded,
    to_rgb,
)
from controlnet_ext.preprocessors.types import DetectedMap, PreprocessInput


def identity(inp: PreprocessInput) -> DetectedMap:
    """none, and the IP-Adapter modules (their embedding is computed at generation time)."""
    return DetectedMap(np.ascontiguousarray(to_rgb(inp.image)))


def invert(inp: PreprocessInput) -> DetectedMap:
    """White background, black lines -> black background, white lines; at the input's size."""
    return DetectedMap(255 - to_rgb(inp.image))


def canny(inp: PreprocessInput) -> DetectedMap:
    padded = scaled_and_padded(inp.image, inp.resolution)
    edges = cv2.Canny(padded.image, int(inp.threshold_a), int(inp.threshold_b))
    return DetectedMap(gray_to_rgb(padded.crop(edges)))


def scribble_xdog(inp: PreprocessInput) -> DetectedMap:
    """Difference of Gaussians (sigma 0.5 vs 5), darkest channel, thresholded at XDoG Threshold."""
    padded = scaled_and_padded(inp.image, inp.resolution)
    pixels = padded.image.astype(np.float32)
    fine = cv2.GaussianBlur(pixels, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(pixels, (0, 0), 5.0)
    darkening = np.clip(np.min(coarse - fine, axis=2), 0, 255).astype(np.uint8)
    # Their `2 * (255 - dog)` is computed in uint8 and wraps for strong lines; computed in int here.
    lines = 2 * darkening.astype(np.int32) > inp.threshold_a
    return DetectedMap(gray_to_rgb(padded.crop(np.where(lines, 255, 0).astype(np.uint8))))


def threshold(inp: PreprocessInput) -> DetectedMap:
    """The threshold scribble: white where every channel is above Binarization Threshold."""
    padded = scaled_and_padded(inp.image, inp.resolution)
    bright = np.min(padded.image, axis=2) > inp.threshold_a
    return DetectedMap(gray_to_rgb(padded.crop(np.where(bright, 255, 0).astype(np.uint8))))


def binary(inp: PreprocessInput) -> DetectedMap:
    """Gray image, inverted binary threshold (dark -> white); threshold 0 or 255 = Otsu's."""
    gray = cv2.cvtColor(resize_short_side(to_rgb(inp.image), inp.resolution), cv2.COLOR_RGB2GRAY)
    level = int(inp.threshold_a)
    if level in (0, 255):
        _, result = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    else:
        _, result = cv2.threshold(gray, level, 255, cv2.THRESH_BINARY_INV)
    return DetectedMap(gray_to_rgb(result))


def blur_gaussian(inp: PreprocessInput) -> DetectedMap:
    image = resize_short_side(to_rgb(inp.image), inp.resolution)
    return DetectedMap(cv2.GaussianBlur(image, (0, 0), float(inp.threshold_a)))


def tile_resample(inp: PreprocessInput) -> DetectedMap:
    """Down-sample by Down Sampling Rate (rates below 1.1 keep the input as it is)."""
    image = to_rgb(inp.image)
    rate = float(inp.threshold_a)
    if rate < 1.1:
        return DetectedMap(np.ascontiguousarray(image))
    height, width = image.shape[:2]
    size = (max(1, int(width / rate)), max(1, int(height / rate)))
    return DetectedMap(cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def color(inp: PreprocessInput) -> DetectedMap:
    """t2ia_color_grid: the image averaged into 64x64-pixel cells."""
    image = to_rgb(inp.image)
    height, width = image.shape[:2]
    scale = inp.resolution / min(height, width)
    size = (int(round(width * scale)), int(round(height * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    cells = cv2.resize(image, (max(1, size[0] // 64), max(1, size[1] // 64)), interpolation=cv2.INTER_CUBIC)
    return DetectedMap(cv2.resize(cells, size, interpolation=cv2.INTER_NEAREST))


def lineart_standard(inp: PreprocessInput) -> DetectedMap:
    """Lines darker than their blurred surroundings, normalised by the median line strength."""
    padded = scaled_and_padded(inp.image, inp.resolution)
    pixels = padded.image.astype(np.float32)
    surroundings = cv2.GaussianBlur(pixels, (0, 0), 6.0)
    intensity = np.clip(np.min(surroundings - pixels, axis=2), 0, 255)
    strong = intensity[intensity > 8]
    scale = max(16.0, float(np.median(strong))) if strong.size else 16.0
    lines = np.clip(intensity / scale * 127.0, 0, 255).astype(np.uint8)
    return DetectedMap(gray_to_rgb(padded.crop(lines)))


def _noise_field(height: int, width: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse uniform grid (one value per `cell` pixels) cubic-upsampled."""
    coarse = rng.uniform(0.0, 1.0, size=(height // cell + 2, width // cell + 2))
    fine = cv2.resize(coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
    fine = fine[cell: cell + height, cell: cell + width]
    fine = fine - fine.min()
    return fine / max(float(fine.max()), 1e-12)


def shuffle(inp: PreprocessInput) -> DetectedMap:
    """Content shuffle: every output pixel is read from a smoothly random place in the image."""
    image = resize_short_side(to_rgb(inp.image), inp.resolution)
    height, width = image.shape[:2]
    rng = np.random.default_rng(None if inp.seed is None else inp.seed & 0xFFFFFFFF)  # as numpy's 32-bit seeds
    map_x = (_noise_field(height, width, 256, rng) * float(width - 1)).astype(np.float32)
    map_y = (_noise_field(height, width, 256, rng) * float(height - 1)).astype(np.float32)
    return DetectedMap(cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR))


def _inpaint_mask(inp: PreprocessInput, height: int, width: int) -> Optional[np.ndarray]:
    mask = inp.mask
    if mask is None and inp.image.ndim == 3 and inp.image.shape[2] == 4:
        mask = inp.image[:, :, 3]          # sd-webui-controlnet's own convention: alpha = mask
    if mask is None:
        return None
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return mask > 127


def inpaint(inp: PreprocessInput) -> DetectedMap:
    """inpaint_only / inpaint_global_harmonious: the image itself, with the hint -1 where masked
    (as the v1.1 inpaint ControlNet was trained); the preview fades the masked area to white."""
    image = np.ascontiguousarray(inp.image[:, :, :3]) if inp.image.ndim == 3 and inp.image.shape[2] == 4 \
        else to_rgb(inp.image)
    height, width = image.shape[:2]
    hint = image.astype(np.float32) / 255.0
    preview = image.copy()
    masked = _inpaint_mask(inp, height, width)
    if masked is not None:
        hint[masked] = -1.0
        preview[masked] = ((image[masked].astype(np.uint16) + 255) // 2).astype(np.uint8)
    return DetectedMap(preview, hint=hint)
