"""Image plumbing shared by the modules: 3-channel conversion and sd-webui-controlnet's resolution
rule (scale so the short side is `resolution`, run on a copy edge-padded to multiples of 64, crop
the pad off the result)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 uint8 -> HxWx3 uint8 (RGBA is composited over white)."""
    if image.dtype != np.uint8:
        raise ValueError(f"preprocessor input must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        over_white = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return over_white.clip(0, 255).astype(np.uint8)
    raise ValueError(f"preprocessor input must have 1, 3 or 4 channels, got {channels}")


def short_side_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(height, width) scaled so the short side is `resolution` (rounded as sd-webui-controlnet)."""
    scale = float(resolution) / float(min(height, width))
    return int(np.round(height * scale)), int(np.round(width * scale))


def resize_short_side(image: np.ndarray, resolution: int) -> np.ndarray:
    """Scale so the short side is `resolution`: cubic when enlarging, area when shrinking."""
    height, width = image.shape[:2]
    new_h, new_w = short_side_size(height, width, resolution)
    enlarging = resolution > min(height, width)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_CUBIC if enlarging else cv2.INTER_AREA)


@dataclass(frozen=True)
class Padded:
    """An image scaled to the processor resolution and edge-padded to multiples of 64 (nets with
    4 down-samplings need it); `crop` cuts a result computed on it back to the scaled size."""

    image: np.ndarray
    height: int
    width: int

    def crop(self, result: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(result[: self.height, : self.width])


def pad_to_64(image: np.ndarray) -> Padded:
    height, width = image.shape[:2]
    pad_h, pad_w = (-height) % 64, (-width) % 64
    pads = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    return Padded(np.ascontiguousarray(np.pad(image, pads, mode="edge")), height, width)


def scaled_and_padded(image: np.ndarray, resolution: int) -> Padded:
    return pad_to_64(resize_short_side(to_rgb(image), resolution))


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
