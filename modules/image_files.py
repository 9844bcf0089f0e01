"""Image bytes with their infotext, written the way A1111 writes them, torch-free.

One encoder for every place an image leaves the app: files in outputs/, the API's base64 images,
the UI's Save, zip and batch folders. The infotext goes into the PNG "parameters" text chunk
(tEXt, or iTXt when it is not latin-1) or, for JPEG and WEBP, the EXIF UserComment; the same
image, text and options give the same bytes wherever they are encoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping, Optional

from PIL import Image, PngImagePlugin

from modules.infotext import INFOTEXT_KEY, user_comment_exif

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}  # extension -> PIL format
# Largest side each format can store; past it the image is written as PNG, as A1111 does.
MAX_SIDE = {"JPEG": 65535, "WEBP": 16383}
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    extension: str  # "png", "jpg", "jpeg" or "webp": the format actually written


def encode_image(image: Image.Image, fmt: str = "png", infotext: str = "", *, quality: int = 80,
                 webp_lossless: bool = False, chunks: Optional[Mapping[str, str]] = None) -> EncodedImage:
    """`image` as a png/jpg/webp file carrying `infotext` ("" writes none).

    `quality` applies to JPEG and lossy WEBP. JPEG has no alpha (RGBA, LA and P become RGB);
    WEBP keeps it. An image too large for JPEG/WEBP is written as PNG (see `extension`).
    `chunks`: more PNG text chunks, after "parameters" (the Extras tab's "postprocessing" and
    "extras", as A1111 writes them); JPEG and WEBP have no place for them.
    Raises ValueError for an unknown format.
    """
    extension = (fmt or "png").lower()
    if extension not in FORMATS:
        raise ValueError(f"image format must be one of {sorted(FORMATS)}, got {fmt!r}")
    kind = FORMATS[extension]
    if kind in MAX_SIDE and max(image.size) > MAX_SIDE[kind]:
        kind, extension = "PNG", "png"
    info = (infotext or "").encode("utf-8", "replace").decode("utf-8")  # a lone surrogate cannot be stored
    buffer = io.BytesIO()
    if kind == "PNG":
        texts = {INFOTEXT_KEY: info} if info else {}
        texts.update({k: v.encode("utf-8", "replace").decode("utf-8") for k, v in (chunks or {}).items() if v})
        pnginfo = None
        if texts:
            pnginfo = PngImagePlugin.PngInfo()
            for key, text in texts.items():
                pnginfo.add_text(key, text)
        if image.mode not in _PNG_MODES:
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(buffer, format="PNG", pnginfo=pnginfo)
    elif kind == "JPEG":
        if image.mode == "I;16":
            image = image.point(lambda v: v * (255 / 65535)).convert("L")
        elif image.mode not in ("L", "RGB", "CMYK"):
            image = image.convert("RGB")
        extra = {"exif": user_comment_exif(info)} if info else {}
        image.save(buffer, format="JPEG", quality=quality, **extra)
    else:
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
        extra = {"exif": user_comment_exif(info)} if info else {}
        image.save(buffer, format="WEBP", quality=quality, lossless=webp_lossless, **extra)
    return EncodedImage(buffer.getvalue(), extension)


def encode_png(image: Image.Image, infotext: str = "") -> bytes:
    """The PNG bytes of `image` with `infotext`: the UI's downloads, zips and batch files."""
    return encode_image(image, "png", infotext).data


__all__ = ["EncodedImage", "FORMATS", "MAX_SIDE", "encode_image", "encode_png"]
