"""Every error the API promises: the right status, a message naming the field or the valid names,
and a server that keeps answering afterwards."""

from __future__ import annotations

import base64
import json

import pytest

from modules.processing import samplers
from tests.api.conftest import MODEL_A, MODEL_B
from tests.api.helpers import b64_png, centre_mask, picture

FAST = {"prompt": "x", "steps": 2, "sampler_name": "Euler a", "seed": 1}


def locs(response) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


@pytest.mark.parametrize("field, value, loc", [
    ("steps", 0, "body.steps"),
    ("steps", 500, "body.steps"),
    ("width", 65, "body.width"),
    ("height", 4096, "body.height"),
    ("n_iter", 0, "body.n_iter"),
    ("batch_size", 99, "body.batch_size"),
    ("cfg_scale", "lots", "body.cfg_scale"),
    ("seed", -5, "body.seed"),
    ("subseed_strength", 2, "body.subseed_strength"),
    ("restore_faces", True, "body.restore_faces"),
])
def test_invalid_fields_are_422_naming_the_field(client, field, value, loc):
    response = client.post("/sdapi/v1/txt2img", json={**FAST, field: value})
    assert response.status_code == 422, response.text
    assert loc in locs(response)


def test_invalid_override_settings_and_img2img_fields(client):
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": {"CLIP_stop_at_last_layers": 40}})
    assert r.status_code == 422 and "body.override_settings.CLIP_stop_at_last_layers" in locs(r)
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": {"no_such_setting": 1}})
    assert r.status_code == 422 and "body.override_settings.no_such_setting" in locs(r)
    image = b64_png(picture())
    for field, value in [("resize_mode", 3), ("inpainting_fill", 4), ("denoising_strength", 1.5)]:
        r = client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [image], "mask": b64_png(centre_mask()),
                                                    field: value})
        assert r.status_code == 422 and f"body.{field}" in locs(r), r.text
    r = client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [image], "mask": b64_png(centre_mask()),
                                                "mask_blur": 100})
    assert r.status_code == 422 and "body.mask_blur" in locs(r), r.text
    r = client.post("/sdapi/v1/img2img", json=FAST)
    assert r.status_code == 422 and "body.init_images" in locs(r)


def test_unknown_sampler_and_schedule_are_404_with_valid_names(client):
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "sampler_name": "Euler b"})
    assert r.status_code == 404
    assert set(samplers.SAMPLER_NAMES) <= set(r.json()["valid"]) and "Euler b" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "scheduler": "wobbly"})
    assert r.status_code == 404 and "Karras" in r.json()["valid"]


def test_unknown_model_and_vae_are_404_with_valid_names(client):
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": {"sd_model_checkpoint": "nope"}})
    assert r.status_code == 404, r.text
    assert any(MODEL_A in name for name in r.json()["valid"]) and any(MODEL_B in n for n in r.json()["valid"])
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "override_settings": {"sd_vae": "missing.safetensors"}})
    assert r.status_code == 404, r.text
    assert "Automatic" in r.json()["valid"]
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"})
    assert r.status_code == 404


@pytest.mark.parametrize("payload", [
    "not base64 at all!!",
    base64.b64encode(b"just some bytes, not an image").decode(),
    b64_png(picture())[:60],  # a truncated PNG
    "",
])
def test_bad_images_are_422(client, payload):
    r = client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [payload]})
    assert r.status_code == 422 and "body.init_images.0" in locs(r), r.text
    r = client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [b64_png(picture())], "mask": payload or "x"})
    assert r.status_code == 422 and "body.mask" in locs(r), r.text
    r = client.post("/sdapi/v1/png-info", json={"image": payload})
    assert r.status_code == 422 and "body.image" in locs(r), r.text


def test_scripts_are_validated_against_what_exists(client):
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "No such plot"})
    assert r.status_code == 422 and "No such plot" in r.json()["detail"] and "X/Y/Z plot" in r.json()["detail"]
    r = client.post("/sdapi/v1/img2img", json={**FAST, "init_images": [b64_png(picture())],
                                                "alwayson_scripts": {"ADetailer": {"args": []}}})
    assert r.status_code == 422 and "ADetailer" in r.json()["detail"]
    assert client.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "", "alwayson_scripts": {}}).status_code == 200


def test_unknown_style_is_ignored_with_a_warning(client):  # A1111's behaviour (issue 11, item 12)
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "styles": ["sunny", "gloomy"]})
    assert r.status_code == 200 and "gloomy" in json.loads(r.json()["info"])["warnings"][0]


def test_out_of_memory_is_a_readable_500_and_the_next_request_works(client, monkeypatch):
    import torch

    import modules.processing.engine as engine_module

    real = engine_module.denoise
    calls = []

    def exhausted(*args, **kwargs):
        if not calls:
            calls.append(1)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "denoise", exhausted)
    r = client.post("/sdapi/v1/txt2img", json=FAST)
    assert r.status_code == 500
    assert "out of memory" in r.json()["detail"] and "batch_size" in r.json()["detail"]
    ok = client.post("/sdapi/v1/txt2img", json=FAST)
    assert ok.status_code == 200 and json.loads(ok.json()["info"])["seed"] == 1


def test_an_engine_crash_is_500_and_the_server_lives_on(client, monkeypatch):
    import modules.processing.engine as engine_module

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(engine_module, "denoise", broken)
    r = client.post("/sdapi/v1/txt2img", json=FAST)
    assert r.status_code == 500 and "boom" in r.json()["detail"]
    monkeypatch.undo()
    assert client.get("/sdapi/v1/progress").status_code == 200
    assert client.post("/sdapi/v1/txt2img", json=FAST).status_code == 200


def test_malformed_json_is_422(client):
    r = client.post("/sdapi/v1/txt2img", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
