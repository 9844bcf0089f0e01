"""The invisible watermark SD's reference scripts (CompVis scripts/txt2img.py) add: the bytes
"StableDiffusionV1" hidden with invisible-watermark's DWT-DCT method, in the BGR picture as those
scripts pass it. Decodable from the saved file with `read_watermark`.

invisible-watermark refuses pictures under 256x256 pixels (r*c < 65536): those are saved without
the mark, and the job says so.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

MARK = b"StableDiffusionV1"
METHOD = "dwtDct"
MIN_PIXELS = 256 * 256  # invisible-watermark's own lower bound


def can_mark(image: Image.Image) -> bool:
    return image.width * image.height >= MIN_PIXELS


def add_watermark(image: Image.Image) -> Image.Image:
    """`image` with the mark (RGB; an alpha channel is kept as it was). Raises ValueError when the
    picture is too small to carry it."""
    if not can_mark(image):
        raise ValueError(f"{image.width}x{image.height} is too small for the invisible watermark "
                         f"(it needs at least {MIN_PIXELS:,} pixels, e.g. 256x256)")
    import cv2
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", MARK)
    bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    marked = Image.fromarray(np.ascontiguousarray(encoder.encode(bgr, METHOD)[:, :, ::-1]))
    if image.mode == "RGBA":
        marked.putalpha(image.getchannel("A"))
    return marked


def read_watermark(image: Image.Image) -> Optional[bytes]:
    """The bytes hidden in `image` (as many as MARK has); None when it is too small to hold them."""
    if not can_mark(image):
        return None
    import cv2
    from imwatermark import WatermarkDecoder

    decoder = WatermarkDecoder("bytes", len(MARK) * 8)
    bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    return bytes(decoder.decode(bgr, METHOD))


__all__ = ["MARK", "add_watermark", "read_watermark", "can_mark"]
