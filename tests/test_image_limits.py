"""The input-image rules shared by the API and the UI (issue 11, items 7 and 8): the pixel limit is
checked from the header before decoding, and a mask sized unlike its image is resized to it."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.processing import image_ops
from modules.generation.request import GenerationRequest, InpaintArea, InpaintOptions, MaskedContent, Mode, ResizeMode
from webui import img2img

LIMIT = 4096 * 4096


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG header whose pixel data is garbage: it opens, but decoding it fails."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"\x00" * 16)


def test_a_huge_image_is_refused_from_its_header_before_decoding():
    # the file holds no pixels: had it been decoded, the error would be a truncated-file one
    with pytest.raises(image_ops.ImageTooLargeError) as caught:
        image_ops.open_image(io.BytesIO(png_header_only(13000, 13000)), LIMIT)
    assert caught.value.size == (13000, 13000) and caught.value.limit == LIMIT
    assert "13000x13000" in str(caught.value) and "max_image_pixels" in str(caught.value)
    with pytest.raises(OSError):  # the same file within the limit does get decoded, and fails
        image_ops.open_image(io.BytesIO(png_header_only(64, 64)), LIMIT)


def test_an_image_within_the_limit_is_loaded():
    buffer = io.BytesIO()
    Image.new("RGB", (4096, 4096), (1, 2, 3)).save(buffer, format="PNG")
    image = image_ops.open_image(io.BytesIO(buffer.getvalue()), LIMIT)
    assert image.size == (4096, 4096) and image.getpixel((4095, 4095)) == (1, 2, 3)


def test_ui_batch_refuses_a_huge_file_naming_it(tmp_path: Path):
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(13000, 13000))
    with pytest.raises(ValueError, match=r"Batch: big\.png: image is 13000x13000"):
        img2img._open_checked(path, LIMIT)


def test_ui_inputs_over_the_limit_get_a_clear_error():
    with pytest.raises(ValueError, match=r"Inpaint upload mask: image is 72x72 = 5,184 pixels; the limit is 4,096"):
        img2img.check_size(Image.new("L", (72, 72)), "Inpaint upload mask", 64 * 64)
    img2img.check_size(Image.new("L", (64, 64)), "Inpaint upload mask", 64 * 64)  # at the limit: fine


def square_mask(size: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


@pytest.mark.parametrize("area", [InpaintArea.WHOLE_PICTURE, InpaintArea.ONLY_MASKED])
def test_a_mask_of_another_size_is_resized_to_its_image(area):
    image = Image.new("RGB", (64, 64), (10, 20, 30))
    options = InpaintOptions(mask=square_mask(32, (12, 12, 19, 19)), mask_blur=0,
                             masked_content=MaskedContent.ORIGINAL, inpaint_area=area)
    prepared = image_ops.prepare_inpaint(image, options, 64, 64, ResizeMode.JUST_RESIZE)
    assert prepared.warning == ("mask is 32x32 but the init image is 64x64; the mask was resized to the image")
    alpha = np.asarray(prepared.overlay_alpha) > 0
    rows, cols = np.nonzero(alpha)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (24, 39, 24, 39)
    same = image_ops.prepare_inpaint(image, options.model_copy(update={"mask": square_mask(64, (24, 24, 39, 39))}),
                                     64, 64, ResizeMode.JUST_RESIZE)
    assert same.warning is None and np.array_equal(np.asarray(same.overlay_alpha) > 0, alpha)


def test_prompt_length_is_bounded_in_the_one_request_type():
    from pydantic import ValidationError

    from modules.generation.request import MAX_PROMPT_CHARS

    GenerationRequest(prompt="a" * MAX_PROMPT_CHARS)
    for field in ("prompt", "negative_prompt"):
        with pytest.raises(ValidationError) as caught:
            GenerationRequest(**{field: "a" * (MAX_PROMPT_CHARS + 1)})
        assert caught.value.errors()[0]["loc"] == (field,)


def test_a_finished_jobs_record_keeps_no_pixels():
    image = Image.new("RGB", (64, 64))
    request = GenerationRequest(mode=Mode.INPAINT, init_images=(image,), steps=7,
                                inpaint=InpaintOptions(mask=Image.new("L", (64, 64))))
    assert request.input_pixels == 2 * 64 * 64
    slim = request.without_pixels()
    assert slim.init_images == () and slim.inpaint is None and slim.steps == 7 and slim.mode is Mode.INPAINT
    assert request.init_images == (image,)  # the request itself is unchanged
