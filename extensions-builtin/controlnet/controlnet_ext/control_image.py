"""Control images: from a unit's input to the hint tensor at a pass's size, as sd-webui-controlnet
makes them (scripts/controlnet.py `detectmap_proc`, external_code `pixel_perfect_resolution`).

    input image -> preprocessor -> detected map (processor_res) -> resize mode -> map at h x w -> /255 -> hint

Resize modes: "Just Resize" stretches to h x w; "Crop and Resize" scales by the larger factor and
crops the middle; "Resize and Fill" scales by the smaller factor and pads with the median colour of
the map's border. The resize itself picks its interpolation as sd-webui-controlnet does: nearest for
maps of a few colours (segmentation), area when shrinking, cubic when growing; two-colour maps
(edges, silhouettes) are thresholded back to black and white (Otsu).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from controlnet_ext.units import ResizeMode


def hwc3(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 -> HxWx3 uint8 (values clipped to 0..255, alpha composited over
    white, as annotator.util.HWC3)."""
    from controlnet_ext.preprocessors.imaging import to_rgb

    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return to_rgb(image)


def image_array(image: Image.Image) -> np.ndarray:
    """A PIL image -> HxWx3 uint8 RGB."""
    return hwc3(np.asarray(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image.convert("RGB")))


def mask_array(mask: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A mask (white = masked) -> HxW uint8 at `size` (w, h) of its image."""
    mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(mask)


def pixel_perfect_resolution(raw_h: int, raw_w: int, target_h: int, target_w: int, mode: ResizeMode) -> int:
    """The processor resolution whose map needs no resampling at the target size (Pixel Perfect):
    the short side times the factor the resize mode scales by."""
    k0, k1 = float(target_h) / float(raw_h), float(target_w) / float(raw_w)
    k = min(k0, k1) if mode is ResizeMode.FILL else max(k0, k1)
    return int(np.round(k * float(min(raw_h, raw_w))))


def _unique_colors(x: np.ndarray) -> int:
    flat = x.reshape(-1, x.shape[2])
    return len(np.unique(flat, axis=0))


def high_quality_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWxC uint8 (C = 3, or 4 with an inpaint mask as alpha) -> size (w, h)."""
    import cv2

    mask = None
    if x.shape[2] == 4:
        mask, x = x[:, :, 3], x[:, :, :3]
    if (x.shape[1], x.shape[0]) != tuple(size):
        smaller = size[0] * size[1] < x.shape[0] * x.shape[1]
        colors = _unique_colors(x)
        binary = colors == 2 and x.min() < 16 and x.max() > 240
        if 2 < colors < 200:
            interpolation = cv2.INTER_NEAREST
        elif smaller:
            interpolation = cv2.INTER_AREA
        else:
            interpolation = cv2.INTER_CUBIC
        y = cv2.resize(x, size, interpolation=interpolation)
        if mask is not None:
            mask = cv2.resize(mask, size, interpolation=interpolation)
        if binary:
            gray = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
            _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            y = np.stack([gray] * 3, axis=2)
    else:
        y = x
    if mask is not None:
        mask = ((mask > 127).astype(np.float32) * 255.0).astype(np.uint8)
        y = np.concatenate([y, mask[:, :, None]], axis=2)
    return y


def fit_map(detected: np.ndarray, mode: ResizeMode, height: int, width: int) -> np.ndarray:
    """The detected map (HxWx3, or HxWx4 with an inpaint mask) at height x width by the resize mode."""
    if mode is ResizeMode.RESIZE:
        return np.ascontiguousarray(high_quality_resize(detected, (width, height)))
    old_h, old_w = float(detected.shape[0]), float(detected.shape[1])
    k0, k1 = height / old_h, width / old_w
    if mode is ResizeMode.FILL:
        k = min(k0, k1)
        borders = np.concatenate([detected[0, :, :], detected[-1, :, :], detected[:, 0, :], detected[:, -1, :]], axis=0)
        border = np.median(borders, axis=0).astype(detected.dtype)
        if len(border) == 4:  # an inpaint map: the padding is to be painted
            border[3] = 255
        canvas = np.tile(border[None, None], [height, width, 1])
        scaled = high_quality_resize(detected, (int(np.round(old_w * k)), int(np.round(old_h * k))))
        new_h, new_w = scaled.shape[:2]
        top, left = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
        canvas[top:top + new_h, left:left + new_w] = scaled[:height, :width]
        return np.ascontiguousarray(canvas)
    k = max(k0, k1)
    scaled = high_quality_resize(detected, (int(np.round(old_w * k)), int(np.round(old_h * k))))
    new_h, new_w = scaled.shape[:2]
    top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    return np.ascontiguousarray(scaled[top:top + height, left:left + width])


def inpaint_hint(fitted: np.ndarray) -> np.ndarray:
    """An RGBA map (alpha = mask) -> the v1.1 inpaint model's hint: the picture in 0..1, -1 where masked."""
    color = fitted[:, :, :3].astype(np.float32) / 255.0
    masked = (fitted[:, :, 3:4].astype(np.float32) / 255.0) > 0.5
    return np.where(masked, -1.0, color).astype(np.float32)


def masked_from_hint(hint: np.ndarray) -> np.ndarray:
    """HxW uint8 mask (255 = masked) of a float hint that marks masked pixels with -1."""
    return ((hint < -0.5).all(axis=2) * 255).astype(np.uint8)


def hint_tensor(values: np.ndarray, device=None, dtype=None):
    """HxWxC float (0..1, or -1 for inpaint) -> [1, C, H, W]."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    return tensor.to(device=device, dtype=dtype) if device is not None or dtype is not None else tensor


def fitted_hint(image: np.ndarray, hint: Optional[np.ndarray], mode: ResizeMode, height: int,
                width: int) -> tuple[np.ndarray, np.ndarray]:
    """(hint values HxWxC float, the map shown to the user HxWx3 uint8) at height x width.

    `image` is the preprocessor's map; `hint` its float form where it differs (inpaint: -1 where
    masked), which is fitted through the RGBA path sd-webui-controlnet uses for inpaint maps so the
    mask stays sharp."""
    if hint is None:
        fitted = fit_map(hwc3(image), mode, height, width)
        return fitted.astype(np.float32) / 255.0, fitted
    if hint.ndim == 3 and hint.shape[2] == 3 and (hint < -0.5).any():
        color = np.clip(hint, 0.0, 1.0)
        rgba = np.concatenate([(color * 255.0).round().astype(np.uint8), masked_from_hint(hint)[:, :, None]], axis=2)
        fitted = fit_map(rgba, mode, height, width)
        shown = fit_map(hwc3(image), mode, height, width)
        return inpaint_hint(fitted), shown
    values = hint.astype(np.float32)
    if values.ndim == 2:
        values = values[:, :, None]
    return fit_map(values, mode, height, width), fit_map(hwc3(image), mode, height, width)


__all__ = ["hwc3", "image_array", "mask_array", "pixel_perfect_resolution", "high_quality_resize", "fit_map",
           "fitted_hint", "inpaint_hint", "hint_tensor"]
