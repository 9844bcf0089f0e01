"""txt2img, img2img and inpaint through the HTTP API, on the real engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modules.infotext import read_infotext
from tests.api.conftest import MODEL_A, MODEL_B
from tests.api.helpers import b64_png, centre_mask, decode, picture

FAST = {"steps": 3, "sampler_name": "Euler a"}


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def txt2img(client, **fields):
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", **FAST, **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    return body, json.loads(body["info"])


def test_txt2img_batch_png_infotext_round_trips_through_png_info(client):
    body, info = txt2img(client, seed=42, batch_size=2, negative_prompt="blurry")
    assert len(body["images"]) == 2
    assert info["all_seeds"] == [42, 43] and info["seed"] == 42
    assert info["all_subseeds"] and info["all_prompts"] == ["a red circle"] * 2
    # no size sent: the model's native size (64 for the tiny model), not A1111's 512
    assert (info["width"], info["height"]) == (64, 64)
    assert info["sampler_name"] == "Euler a" and info["steps"] == 3 and info["batch_size"] == 2
    assert info["cfg_scale"] == 7.0 and info["job_timestamp"].isdigit() and len(info["infotexts"]) == 2
    assert info["sd_model_name"] == MODEL_A
    assert body["parameters"]["prompt"] == "a red circle" and body["parameters"]["steps"] == 3

    image = decode(body["images"][1])
    assert image.format == "PNG" and image.size == (64, 64)
    assert read_infotext(image) == info["infotexts"][1]

    parsed = client.post("/sdapi/v1/png-info", json={"image": body["images"][1]})
    assert parsed.status_code == 200, parsed.text
    got = parsed.json()
    assert got["info"] == info["infotexts"][1]
    assert got["parameters"]["Prompt"] == "a red circle"
    assert got["parameters"]["Negative prompt"] == "blurry"
    assert got["parameters"]["Seed"] == "43" and got["parameters"]["Steps"] == "3"
    assert (got["parameters"]["Size-1"], got["parameters"]["Size-2"]) == ("64", "64")


def test_same_seed_same_image_and_n_iter(client):
    first, info1 = txt2img(client, seed=7, n_iter=2)
    again, info2 = txt2img(client, seed=7, n_iter=2)
    assert info1["all_seeds"] == [7, 8] == info2["all_seeds"]
    assert first["images"] == again["images"]


def test_api_defaults_are_a1111s(client):
    """steps 50 and sampler Euler (sampler_index) when the client sends neither."""
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, "send_images": False})
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["steps"] == 50 and info["sampler_name"] == "Euler"
    assert response.json()["images"] == []
    assert response.json()["parameters"]["save_images"] is False


def test_size_seed_resize_variation_and_scheduler(client):
    body, info = txt2img(client, seed=3, subseed=9, subseed_strength=0.5, width=72, height=64,
                         seed_resize_from_w=64, seed_resize_from_h=64, sampler_name="DPM++ 2M",
                         scheduler="karras")
    assert decode(body["images"][0]).size == (72, 64)
    assert info["subseed"] == 9 and info["subseed_strength"] == 0.5
    assert info["seed_resize_from_w"] == 64 and info["scheduler"] == "Karras"
    assert "Variation seed: 9" in info["infotexts"][0] and "Seed resize from: 64x64" in info["infotexts"][0]


def test_override_settings_switch_model_for_one_request_only(client):
    _, plain = txt2img(client, seed=5)
    other_body, other = txt2img(client, seed=5, override_settings={"sd_model_checkpoint": MODEL_B,
                                                                   "CLIP_stop_at_last_layers": 2})
    after_body, after = txt2img(client, seed=5)
    assert plain["sd_model_name"] == MODEL_A == after["sd_model_name"]
    assert other["sd_model_name"] == MODEL_B and other["clip_skip"] == 2 and after["clip_skip"] == 1
    assert "Clip skip: 2" in other["infotexts"][0]
    assert other_body["images"][0] != after_body["images"][0]
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1


def test_infotext_fills_only_unset_fields(client):
    text = "a blue square\nSteps: 2, Sampler: DPM++ 2M, CFG scale: 5, Seed: 77, Size: 64x72"
    response = client.post("/sdapi/v1/txt2img", json={"infotext": text, "prompt": "a red circle", "steps": 3})
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["seed"] == 77 and info["cfg_scale"] == 5 and (info["width"], info["height"]) == (64, 72)
    assert info["sampler_name"] == "DPM++ 2M"
    assert info["steps"] == 3 and info["prompt"] == "a red circle"  # sent by the client, so they win
    response = client.post("/sdapi/v1/txt2img", json={"infotext": text, "seed": 5})
    info = json.loads(response.json()["info"])
    assert info["seed"] == 5 and info["steps"] == 2 and info["prompt"] == "a blue square"


def test_styles_apply_and_unknown_or_unapplied_fields_are_reported(client):
    _, info = txt2img(client, seed=1, styles=["sunny"], made_up_field=3, s_min_uncond=0.5, negative_prompt=None)
    assert info["styles"] == ["sunny"]
    assert info["prompt"] == "a red circle, sunny day" and info["negative_prompt"] == "blurry"
    assert any("made_up_field" in w for w in info["warnings"])
    assert any("not applied: s_min_uncond" in w for w in info["warnings"])


def test_save_images_writes_files_only_when_asked(client, ctx):
    outputs = ctx.paths.outputs_dir
    before = set(outputs.rglob("*.png")) if outputs.exists() else set()
    txt2img(client, seed=11)
    after_default = set(outputs.rglob("*.png")) if outputs.exists() else set()
    assert after_default == before
    body, info = txt2img(client, seed=12, batch_size=2, save_images=True)
    new = set(outputs.rglob("*.png")) - before
    assert len(new) == 3  # two images and the grid
    # as A1111: the grid comes first when one is made
    assert len(body["images"]) == 3 and info["index_of_first_image"] == 1


def test_img2img(client):
    body = {"init_images": [b64_png(picture())], "denoising_strength": 0.5, "seed": 3, **FAST,
            "prompt": "a circle", "include_init_images": False}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    info = json.loads(out["info"])
    assert info["denoising_strength"] == 0.5 and "Denoising strength: 0.5" in info["infotexts"][0]
    assert out["parameters"]["init_images"] is None
    image = decode(out["images"][0])
    assert image.size == (64, 64)
    # strength 0 returns the init image unchanged
    same = client.post("/sdapi/v1/img2img", json={**body, "denoising_strength": 0.0}).json()
    assert np.abs(px(decode(same["images"][0])) - px(picture())).max() <= 1


@pytest.mark.parametrize("resize_mode", [0, 1, 2])
def test_img2img_resize_modes(client, resize_mode):
    body = {"init_images": [b64_png(picture(96))], "resize_mode": resize_mode, "width": 64, "height": 64,
            "seed": 1, **FAST}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    assert decode(response.json()["images"][0]).size == (64, 64)


def test_inpaint_keeps_unmasked_pixels(client):
    init = picture()
    body = {"init_images": [b64_png(init)], "mask": b64_png(centre_mask()), "mask_blur": 0,
            "inpainting_fill": 1, "inpaint_full_res": False, "denoising_strength": 1.0, "seed": 4, **FAST}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    out = px(decode(response.json()["images"][0]))
    original = px(init)
    outside = np.ones(out.shape[:2], bool)
    outside[20:45, 20:45] = False
    assert np.abs(out[outside] - original[outside]).max() <= 2
    assert np.abs(out[26:39, 26:39] - original[26:39, 26:39]).mean() > 2
    assert "Mask blur: 0" in info["infotexts"][0]


@pytest.mark.parametrize("fill", [0, 2, 3])
def test_inpaint_fill_modes_full_res_and_invert(client, fill):
    body = {"init_images": [b64_png(picture())], "mask": b64_png(centre_mask()), "inpainting_fill": fill,
            "inpaint_full_res": True, "inpaint_full_res_padding": 8, "inpainting_mask_invert": fill == 3,
            "seed": 4, **FAST}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    text = json.loads(response.json()["info"])["infotexts"][0]
    assert "Inpaint area: Only masked" in text and "Masked area padding: 8" in text
    assert {0: "Masked content: fill", 2: "Masked content: latent noise",
            3: "Masked content: latent nothing"}[fill] in text
    assert ("Mask mode: Inpaint not masked" in text) == (fill == 3)


def test_rgba_mask_uses_alpha_and_data_urls(client):
    mask = centre_mask().convert("RGBA")
    mask.putalpha(centre_mask())
    body = {"init_images": ["data:image/png;base64," + b64_png(picture())],
            "mask": "data:image/png;base64," + b64_png(mask), "seed": 4, **FAST}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text


def test_options_switch_the_default_model(client):
    try:
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": MODEL_B}).status_code == 200
        assert MODEL_B in client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
        _, info = txt2img(client, seed=1)
        assert info["sd_model_name"] == MODEL_B
    finally:
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": MODEL_A}).status_code == 200
    _, info = txt2img(client, seed=1)
    assert info["sd_model_name"] == MODEL_A


# ---------------------------------------------------------------------------------------------
# one encoder, one record, one mask rule for the API, the saved files and the UI


def test_api_images_are_the_saved_files_bytes(client, ctx):
    import base64

    outputs = ctx.paths.outputs_dir
    before = set(outputs.rglob("*.png")) if outputs.exists() else set()
    body, info = txt2img(client, seed=21, batch_size=2, save_images=True)
    new = set(outputs.rglob("*.png")) - before
    grids = [p for p in new if p.name.startswith("grid-")]
    images = sorted(p for p in new if p not in grids)
    assert len(grids) == 1 and len(images) == 2
    sent = [base64.b64decode(b64) for b64 in body["images"]]  # grid first, then the images
    assert sent[0] == grids[0].read_bytes()
    assert sent[1:] == [p.read_bytes() for p in images]
    assert [read_infotext(decode(b)) for b in body["images"][1:]] == info["infotexts"][1:]


def test_info_is_read_from_the_structured_params(client):
    body = {"init_images": [b64_png(picture())], "mask": b64_png(centre_mask()), "mask_blur": 3,
            "inpaint_full_res": True, "inpaint_full_res_padding": 8, "seed": 4, **FAST}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    extra = info["extra_generation_params"]
    # typed values, as A1111's p.extra_generation_params holds them (not text parsed back)
    assert extra["Mask blur"] == 3 and extra["Masked area padding"] == 8
    assert extra["Inpaint area"] == "Only masked" and "Steps" not in extra and "Seed" not in extra
    text = info["infotexts"][0]
    assert f"Model hash: {info['sd_model_hash']}" in text and f"Model: {info['sd_model_name']}" in text


def _masks() -> dict:
    from PIL import Image

    grey = Image.new("L", (64, 64), 0)
    grey.paste(128, (8, 8, 32, 32))  # the threshold itself: the UI used to drop it, the API kept it
    grey.paste(200, (32, 32, 56, 56))
    soft_alpha = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    soft_alpha.paste((0, 0, 0, 128), (8, 8, 40, 40))
    opaque = grey.convert("RGBA")
    palette = grey.convert("P")
    palette.info["transparency"] = 0
    la = Image.merge("LA", (grey, grey))
    return {"grey": grey, "soft_alpha": soft_alpha, "opaque_rgba": opaque, "palette": palette, "la": la}


@pytest.mark.parametrize("name", ["grey", "soft_alpha", "opaque_rgba", "palette", "la"])
def test_api_and_ui_read_one_uploaded_mask_alike(ctx, tmp_path, name):
    from PIL import Image

    from modules.api import schemas
    from modules.api.service import ApiService
    from modules.processing import image_ops

    mask = _masks()[name]
    path = tmp_path / "mask.png"
    mask.save(path)
    body = schemas.Img2ImgRequest(init_images=[b64_png(picture())], mask=b64_png(Image.open(path)), **FAST)
    api_mask = ApiService(ctx).prepare(body, is_img2img=True).request.inpaint.mask
    with Image.open(path) as opened:  # gradio hands the Inpaint upload tab an RGBA image
        ui_mask = image_ops.mask_channel(opened.convert("RGBA"))
    with image_ops.open_image(path, 10**7) as opened:  # the Batch tab reads the file itself
        batch_mask = image_ops.mask_channel(opened)
    assert api_mask.mode == ui_mask.mode == batch_mask.mode == "L"
    assert np.array_equal(np.asarray(api_mask), np.asarray(ui_mask))
    assert np.array_equal(np.asarray(api_mask), np.asarray(batch_mask))
    # and the engine repaints exactly the pixels at or above the threshold
    hard = np.asarray(image_ops.binary_mask(api_mask))
    assert np.array_equal(hard > 0, np.asarray(api_mask) >= image_ops.MASK_THRESHOLD)
