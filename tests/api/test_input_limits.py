"""Inputs too big or out of range (issue 11, items 7 and 8): each a 422 naming the field, and a
mask sized unlike its init image resized to it, with a warning."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.generation.request import MAX_PROMPT_CHARS
from tests.api.helpers import b64_png, decode, picture, wait_for

FAST = {"prompt": "x", "steps": 3, "sampler_name": "Euler a", "seed": 4}
HUGE = (13000, 13000)


def errors(response) -> dict[str, str]:
    """{'body.field.0': message} from a 422 body."""
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in response.json()["detail"]}


@pytest.fixture(scope="module")
def huge_png() -> str:
    """A valid PNG of 13000x13000 pixels that is only kilobytes on the wire (1 bit, all black)."""
    buffer = io.BytesIO()
    Image.new("1", HUGE).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def assert_too_large(response, loc: str) -> None:
    assert response.status_code == 422, response.text
    found = errors(response)
    assert loc in found, found
    assert "13000x13000" in found[loc] and "16,777,216" in found[loc] and "max_image_pixels" in found[loc]


def test_huge_init_image_is_422_naming_it_and_the_limit(client, huge_png):
    small = b64_png(picture())
    r = client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [small, huge_png]})
    assert_too_large(r, "body.init_images.1")


def test_size_is_read_from_the_header_before_decoding(client):
    """A PNG header with garbage pixel data: decoding it would fail as truncated, yet the answer is
    'too large', so the size was checked before any pixel was decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", *HUGE, 8, 2, 0, 0, 0))
              + chunk(b"IDAT", b"\x00" * 16))  # garbage pixel data
    r = client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [base64.b64encode(header).decode()]})
    assert_too_large(r, "body.init_images.0")


def test_huge_mask_is_422_naming_it(client, huge_png):
    r = client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [b64_png(picture())], "mask": huge_png})
    assert_too_large(r, "body.mask")


def test_png_info_with_a_huge_image_is_422(client, huge_png):
    assert_too_large(client.post("/sdapi/v1/png-info", json={"image": huge_png}), "body.image")


def test_the_limit_is_the_stored_setting_not_a_per_request_override(client):
    image = b64_png(picture(72))  # 5184 pixels
    try:
        assert client.post("/sdapi/v1/options", json={"max_image_pixels": 64 * 64}).status_code == 200
        r = client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [image],
                                                    "override_settings": {"max_image_pixels": 10**8}})
        assert r.status_code == 422 and "72x72" in errors(r)["body.init_images.0"], r.text
    finally:
        assert client.post("/sdapi/v1/options", json={"max_image_pixels": 4096 * 4096}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["max_image_pixels"] == 4096 * 4096


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_oversized_prompt_is_422_naming_it(client, field):
    r = client.post("/sdapi/v1/txt2img", json={**FAST, field: "a" * (MAX_PROMPT_CHARS + 1)})
    assert r.status_code == 422, r.text
    assert f"body.{field}" in errors(r) and str(MAX_PROMPT_CHARS) in errors(r)[f"body.{field}"]


def test_prompt_that_styles_expand_past_the_bound_is_422_naming_prompt(client):
    # the "sunny" style (conftest) appends ", sunny day": within the bound as sent, past it once expanded
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "prompt": "a" * (MAX_PROMPT_CHARS - 5), "styles": ["sunny"]})
    assert r.status_code == 422, r.text
    assert "body.prompt" in errors(r)


@pytest.mark.parametrize("value", [5, -0.5])
def test_txt2img_denoising_strength_out_of_range_is_422(client, value):
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "denoising_strength": value})
    assert r.status_code == 422, r.text
    assert "body.denoising_strength" in errors(r)


@pytest.mark.parametrize("task_id", ["t" * 100_000, "task with spaces", "task/../x", "t\u00e9"])
def test_bad_force_task_id_is_422(client, task_id):
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "force_task_id": task_id})
    assert r.status_code == 422, r.text[:500]
    assert "body.force_task_id" in errors(r)


def small_mask() -> Image.Image:
    """Half the init image's size: the square 12..20 becomes 24..40 once resized to 64x64."""
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((12, 12, 19, 19), fill=255)
    return mask


@pytest.mark.parametrize("full_res", [False, True])
def test_mask_of_another_size_is_resized_to_the_init_image_with_a_warning(client, ctx, full_res):
    init = picture()  # 64x64, the tiny model's native size
    body = {**FAST, "init_images": [b64_png(init)], "mask": b64_png(small_mask()), "mask_blur": 0,
            "inpainting_fill": 1, "inpaint_full_res": full_res, "denoising_strength": 1.0}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert any("mask is 32x32" in w and "64x64" in w and "resized" in w for w in info["warnings"]), info["warnings"]
    out = decode(r.json()["images"][0])
    assert out.size == init.size
    out_px, original = np.asarray(out, np.int16), np.asarray(init, np.int16)
    outside = np.ones(out_px.shape[:2], bool)
    outside[20:44, 20:44] = False  # the resized square (24..40) and a Lanczos margin
    assert np.abs(out_px[outside] - original[outside]).max() <= 2
    assert np.abs(out_px[26:38, 26:38] - original[26:38, 26:38]).mean() > 2
    # the record the queue keeps of the finished job holds no input pixels (they can be 50 MB each)
    record = wait_for(lambda: (job := ctx.queue.get(info["task_id"])).request.inpaint is None and job)
    assert record.request.init_images == () and record.request.steps == 3
