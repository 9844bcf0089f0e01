"""POST /sdapi/v1/extra-single-image and /extra-batch-images on the real server: A1111's fields and
defaults, numbers sent as strings, the text chunks of the returned images, saving on request, and
a 422 naming the field for each bad input (the server keeps serving)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.api.helpers import b64_png, decode, picture

SINGLE = "/sdapi/v1/extra-single-image"
BATCH = "/sdapi/v1/extra-batch-images"


def errors(response) -> dict[str, str]:
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in response.json()["detail"]}


def png_with_parameters(image: Image.Image, text: str) -> str:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode()


def extras_files(ctx) -> set:
    folder = ctx.paths.outputs_dir / "extras-images"
    return set(folder.iterdir()) if folder.exists() else set()


def test_single_image_scale_by_string_factor_keeps_parameters(client, ctx):
    source = picture(48).resize((48, 32))
    before = extras_files(ctx)
    r = client.post(SINGLE, json={"image": png_with_parameters(source, "a cat\nSteps: 20, Seed: 5"),
                                  "upscaling_resize": "2", "resize_mode": "0", "upscaler_1": "Lanczos"})
    assert r.status_code == 200, r.text
    body = r.json()
    out = decode(body["image"])
    assert out.size == (96, 64)
    expected = np.asarray(source.resize((96, 64), Image.Resampling.LANCZOS))
    assert np.array_equal(np.asarray(out.convert("RGB")), expected)
    text = "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert out.info["parameters"] == "a cat\nSteps: 20, Seed: 5"
    assert out.info["postprocessing"] == text
    assert body["html_info"] == f"<p>{text}</p>"
    assert extras_files(ctx) == before  # as A1111's API: nothing saved unless asked


def test_defaults_do_nothing_to_the_size(client):
    """A1111's defaults: upscaler_1 "None" means no upscaling at all, whatever upscaling_resize says."""
    r = client.post(SINGLE, json={"image": b64_png(picture(40))})
    assert r.status_code == 200, r.text
    assert decode(r.json()["image"]).size == (40, 40)
    assert r.json()["html_info"] == "<p></p>"


def test_batch_to_size_with_crop_saved_on_request(client, ctx):
    wide, tall = picture(64).resize((64, 32)), picture(64).resize((32, 64))
    before = extras_files(ctx)
    r = client.post(BATCH, json={
        "imageList": [{"data": b64_png(wide), "name": "wide.png"}, {"data": b64_png(tall), "name": "tall.png"}],
        "resize_mode": 1, "upscaling_resize_w": "100", "upscaling_resize_h": 80, "upscaling_crop": "true",
        "upscaler_1": "Nearest", "save_images": True})
    assert r.status_code == 200, r.text
    images = [decode(b) for b in r.json()["images"]]
    assert [i.size for i in images] == [(100, 80), (100, 80)]
    text = "Postprocess upscale to: 100x80, Postprocess crop to: 100x80, Postprocess upscaler: Nearest"
    assert r.json()["html_info"] == f"<p>{text}</p>"
    # the wide one: scaled to 160x80 (covers 100x80), then its centre cut out
    expected = wide.resize((160, 80), Image.Resampling.NEAREST).crop((30, 0, 130, 80))
    assert np.array_equal(np.asarray(images[0]), np.asarray(expected))
    saved = sorted(extras_files(ctx) - before)
    assert len(saved) == 2 and all(p.suffix == ".png" for p in saved)
    with Image.open(saved[0]) as file:
        assert file.size == (100, 80)
        assert file.info["extras"] == text and file.info["postprocessing"] == text


def test_batch_without_crop_keeps_the_aspect(client):
    r = client.post(BATCH, json={"imageList": [{"data": b64_png(picture(64).resize((64, 32))), "name": "a"}],
                                 "resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 80,
                                 "upscaling_crop": False, "upscaler_1": "Lanczos"})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]).size == (160, 80)
    assert "crop" not in r.json()["html_info"]


def test_upscaler_2_is_blended_by_its_visibility(client):
    source = picture(32)
    r = client.post(SINGLE, json={"image": b64_png(source), "upscaler_1": "Lanczos", "upscaler_2": "Nearest",
                                  "extras_upscaler_2_visibility": "0.25", "upscaling_resize": 3})
    assert r.status_code == 200, r.text
    first = source.resize((96, 96), Image.Resampling.LANCZOS)
    second = source.resize((96, 96), Image.Resampling.NEAREST)
    assert np.array_equal(np.asarray(decode(r.json()["image"])), np.asarray(Image.blend(first, second, 0.25)))
    assert "Postprocess upscaler 2: Nearest" in r.json()["html_info"]


@pytest.mark.parametrize("fields, loc, words", [
    ({"upscaler_1": "NoSuchUpscaler"}, "body.upscaler_1", ["NoSuchUpscaler", "Lanczos", "Nearest"]),
    ({"upscaler_1": "Lanczos", "upscaler_2": "Latent"}, "body.upscaler_2", ["Latent", "Lanczos"]),
    ({"upscaling_resize": 9}, "body.upscaling_resize", ["8"]),
    ({"upscaling_resize": "two"}, "body.upscaling_resize", ["number"]),
    ({"resize_mode": 2}, "body.resize_mode", ["1"]),
    ({"extras_upscaler_2_visibility": 1.5}, "body.extras_upscaler_2_visibility", ["1"]),
    ({"gfpgan_visibility": -0.1}, "body.gfpgan_visibility", ["0"]),
    ({"upscaling_resize_w": 0, "resize_mode": 1}, "body.upscaling_resize_w", ["1"]),
    ({"image": "not base64 at all!"}, "body.image", ["base64"]),
    ({"image": ""}, "body.image", ["empty"]),
    ({"upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 9000, "upscaling_resize_h": 9000},
     "body.upscaling_resize_w", ["9000x9000", "67,108,864"]),
])
def test_bad_single_image_fields_are_422_naming_them(client, fields, loc, words):
    r = client.post(SINGLE, json={"image": b64_png(picture(16)), **fields})
    assert r.status_code == 422, r.text
    found = errors(r)
    assert loc in found, found
    assert all(w in found[loc] for w in words), found[loc]
    ok = client.post(SINGLE, json={"image": b64_png(picture(16)), "upscaler_1": "Nearest"})
    assert ok.status_code == 200  # the server keeps serving


def test_bad_batch_item_names_its_index(client):
    r = client.post(BATCH, json={"imageList": [{"data": b64_png(picture(16)), "name": "ok.png"},
                                               {"data": "@@@", "name": "bad.png"}]})
    assert r.status_code == 422, r.text
    assert "body.imageList.1.data" in errors(r)
    r = client.post(BATCH, json={"imageList": [{"name": "no-data.png"}]})
    assert r.status_code == 422 and "body.imageList.0.data" in errors(r)


def test_huge_image_is_refused_by_max_image_pixels(client):
    buffer = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buffer, format="PNG")  # kilobytes on the wire
    r = client.post(SINGLE, json={"image": base64.b64encode(buffer.getvalue()).decode(), "upscaler_1": "Lanczos"})
    assert r.status_code == 422, r.text
    assert "max_image_pixels" in errors(r)["body.image"]


@pytest.mark.parametrize("field, file", [("gfpgan_visibility", "GFPGANv1.4.pth"),
                                         ("codeformer_visibility", "codeformer.pth")])
def test_missing_face_restorer_is_422_naming_the_field_and_the_file(client, ctx, field, file):
    r = client.post(SINGLE, json={"image": b64_png(picture(16)), field: "0.5"})
    assert r.status_code == 422, r.text
    message = errors(r)[f"body.{field}"]
    assert file in message and "models" in message
    # at visibility 0 the model is not needed
    assert client.post(SINGLE, json={"image": b64_png(picture(16)), field: 0}).status_code == 200
