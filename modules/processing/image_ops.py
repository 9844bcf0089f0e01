"""Pixel-space steps around sampling: resize modes, mask preparation, 'only masked' crops, compositing.

All functions take and return PIL images; nothing here touches a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from modules.generation.request import InpaintOptions, ResizeMode

RESAMPLE = Image.Resampling.LANCZOS


class ImageTooLargeError(ValueError):
    """An input image has more pixels than the `max_image_pixels` setting allows."""

    def __init__(self, size: tuple[int, int], limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(f"image is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels; the limit is {limit:,} "
                         "pixels (setting max_image_pixels)")


def check_pixels(image: Image.Image, limit: int) -> None:
    """ImageTooLargeError if the image is over the limit. On a freshly opened file only the header
    has been read, so this costs nothing and runs before the pixels are decoded."""
    width, height = image.size
    if width * height > limit:
        raise ImageTooLargeError((width, height), limit)


def base64_bytes(data: str) -> bytes:
    """The bytes of an image sent as base64 text (plain, URL-safe, or a data: URL); ValueError saying
    why not. The one reading of image fields for the API and extensions' args alike."""
    import base64
    import binascii

    text = data.strip()
    if not text:
        raise ValueError("empty")
    if text.startswith(("http://", "https://")):
        raise ValueError("URLs are not fetched; send the image itself as base64")
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head:
            raise ValueError("a data: URL must carry base64 data")
    text = "".join(text.split())
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.b64decode(text, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"corrupt base64 ({err})") from None


def open_image(source: Any, limit: int) -> Image.Image:
    """A file path or binary stream -> a loaded image, refused from its header when over `limit`."""
    image = Image.open(source)  # lazy: reads the header only
    try:
        check_pixels(image, limit)
        image.load()
    except BaseException:
        image.close()
        raise
    return image


def fit_mask(mask: Image.Image, size: tuple[int, int], mode: ResizeMode) -> Image.Image:
    """A mask sized unlike its init image is resized to it, as A1111 does (`images.resize_image`
    with the job's resize mode, Lanczos), so mask and picture line up before anything else."""
    return resize_image(mask, size[0], size[1], mode)


def mask_size_warning(mask_size: tuple[int, int], image_size: tuple[int, int]) -> Optional[str]:
    if mask_size == image_size:
        return None
    return (f"mask is {mask_size[0]}x{mask_size[1]} but the init image is {image_size[0]}x{image_size[1]}; "
            "the mask was resized to the image")


def resize_image(image: Image.Image, width: int, height: int, mode: ResizeMode) -> Image.Image:
    """A1111's three resize modes."""
    if image.size == (width, height):
        return image
    if mode is ResizeMode.JUST_RESIZE:
        return image.resize((width, height), RESAMPLE)
    src_w, src_h = image.size
    if mode is ResizeMode.CROP_AND_RESIZE:
        scale = max(width / src_w, height / src_h)
        new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
        resized = image.resize((new_w, new_h), RESAMPLE)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    # Resize and fill: fit inside, then stretch the edge rows/columns into the empty bands.
    scale = min(width / src_w, height / src_h)
    new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    resized = image.resize((new_w, new_h), RESAMPLE)
    canvas = Image.new(image.mode, (width, height))
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas.paste(resized, (left, top))
    right, bottom = width - left - new_w, height - top - new_h
    bands = [  # (source strip of the resized image, size to stretch it to, where it goes)
        ((0, 0, 1, new_h), (left, new_h), (0, top)),
        ((new_w - 1, 0, new_w, new_h), (right, new_h), (left + new_w, top)),
        ((0, 0, new_w, 1), (width, top), (0, 0)),
        ((0, new_h - 1, new_w, new_h), (width, bottom), (0, top + new_h)),
    ]
    for strip, size, position in bands:
        if size[0] > 0 and size[1] > 0:
            canvas.paste(resized.crop(strip).resize(size), position)
    return canvas


# The mask rules, one home for the engine, the API and the UI (torch-free: webui/ imports them).
MASK_THRESHOLD = 128  # a mask pixel at or above it is repainted


def mask_channel(mask: Image.Image) -> Image.Image:
    """The 'L' mask an uploaded mask image stands for, A1111's rule (create_binary_mask): a mask
    with transparency is its alpha channel (transparent = keep), any other its luminance (white =
    repaint). Not thresholded: `binary_mask` does that, after any resize."""
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        rgba = mask.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha
        return rgba.convert("L")
    return mask.convert("L")


def mask_from_layers(layers: list[Image.Image], size: tuple[int, int]) -> Optional[Image.Image]:
    """The mask painted in an image editor's layers: every pixel any stroke touched (alpha > 0) is
    repainted, whatever its colour. None when nothing was painted."""
    alpha = np.zeros((size[1], size[0]), dtype=np.uint8)
    for layer in layers:
        layer = layer.convert("RGBA")
        if layer.size != size:
            layer = layer.resize(size)
        alpha = np.maximum(alpha, np.asarray(layer.getchannel("A")))
    if not alpha.any():
        return None
    return Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8), mode="L")


def binary_mask(mask: Image.Image, invert: bool = False) -> Image.Image:
    """'L' mask, 255 = repaint: `mask_channel`, then thresholded at MASK_THRESHOLD."""
    mask = mask_channel(mask).point(lambda v: 255 if v >= MASK_THRESHOLD else 0)
    return ImageOps.invert(mask) if invert else mask


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


@dataclass(frozen=True)
class CropRegion:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)

    @property
    def size(self) -> tuple[int, int]:
        return (self.right - self.left, self.bottom - self.top)


def masked_region(mask: Image.Image, padding: int, target_w: int, target_h: int) -> CropRegion:
    """Bounding box of the mask plus padding, grown to the target aspect ratio, inside the image."""
    img_w, img_h = mask.size
    bbox = mask.getbbox()
    if bbox is None:
        return CropRegion(0, 0, img_w, img_h)
    left, top = max(bbox[0] - padding, 0), max(bbox[1] - padding, 0)
    right, bottom = min(bbox[2] + padding, img_w), min(bbox[3] + padding, img_h)
    ratio = target_w / target_h
    w, h = right - left, bottom - top
    if w / h < ratio:  # too tall: widen
        grow = min(round(h * ratio) - w, img_w - w)
        left = max(0, min(left - grow // 2, img_w - (w + grow)))
        right = left + w + grow
    else:  # too wide: heighten
        grow = min(round(w / ratio) - h, img_h - h)
        top = max(0, min(top - grow // 2, img_h - (h + grow)))
        bottom = top + h + grow
    return CropRegion(left, top, right, bottom)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """'fill' masked content: paint the hole with ever finer blurs of what surrounds it."""
    rgb = image.convert("RGB")
    keep = ImageOps.invert(mask.convert("L"))
    filled = Image.new("RGB", rgb.size, (127, 127, 127))
    known = np.asarray(keep, dtype=np.float32) / 255.0
    for radius in (256, 64, 16, 4, 1):
        weight = np.asarray(Image.fromarray((known * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)),
                            dtype=np.float32) / 255.0
        colour = np.asarray(Image.composite(rgb, Image.new("RGB", rgb.size), keep).filter(ImageFilter.GaussianBlur(radius)),
                            dtype=np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            estimate = np.where(weight[..., None] > 1e-3, colour / weight[..., None], np.asarray(filled, np.float32))
        filled = Image.fromarray(np.clip(estimate, 0, 255).astype(np.uint8))
    return Image.composite(rgb, filled, keep)


@dataclass(frozen=True)
class PreparedInpaint:
    """One init image made ready for sampling, plus what is needed to put the result back."""

    image: Image.Image  # RGB at the sampling size (content already 'filled' if asked)
    mask: Image.Image  # 'L' at the sampling size, blurred: what the sampler repaints
    original: Image.Image  # RGB, the full picture the result is composited back onto
    overlay_alpha: Image.Image  # 'L' at the original size: 0 keeps the original pixel exactly
    crop: CropRegion | None  # set for "Only masked"
    warning: Optional[str] = None  # e.g. the mask had to be resized to the image


def prepare_inpaint(image: Image.Image, options: InpaintOptions, width: int, height: int,
                    resize_mode: ResizeMode) -> PreparedInpaint:
    from modules.generation.request import InpaintArea, MaskedContent

    mask = options.mask
    if mask.size != image.size:
        mask = fit_mask(mask, image.size, resize_mode)
    original = resize_image(image.convert("RGB"), width, height, resize_mode)
    hard = binary_mask(resize_image(mask, width, height, resize_mode), options.invert_mask)
    blurred = blur_mask(hard, options.mask_blur)
    # Blur softens the seam inside the mask only: outside it the original pixels stay exact.
    alpha = Image.fromarray(np.where(np.asarray(hard) > 0, np.asarray(blurred), 0).astype(np.uint8))
    work, work_mask, crop = original, blurred, None
    if options.inpaint_area is InpaintArea.ONLY_MASKED:
        crop = masked_region(hard, options.only_masked_padding, width, height)
        work = original.crop(crop.box).resize((width, height), RESAMPLE)
        work_mask = blurred.crop(crop.box).resize((width, height), RESAMPLE)
    if options.masked_content is MaskedContent.FILL:
        work = fill_masked(work, binary_mask(work_mask))
    return PreparedInpaint(image=work, mask=work_mask, original=original, overlay_alpha=alpha, crop=crop,
                           warning=mask_size_warning(options.mask.size, image.size))


def composite_inpaint(result: Image.Image, prepared: PreparedInpaint) -> Image.Image:
    """Put the sampled picture back: pasted into its crop, then blended by the mask alpha."""
    generated = result.convert("RGB")
    if prepared.crop is not None:
        canvas = prepared.original.copy()
        canvas.paste(generated.resize(prepared.crop.size, RESAMPLE), prepared.crop.box[:2])
        generated = canvas
    return Image.composite(generated, prepared.original, prepared.overlay_alpha)
