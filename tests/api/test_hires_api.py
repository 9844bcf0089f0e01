"""Hires fix through /sdapi/v1/txt2img on the real server: A1111's fields, errors that name them,
info as A1111 writes it, and `infotext` that reproduces the job."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from modules.infotext import parse_infotext
from tests.api.helpers import decode

FAST = {"prompt": "a red circle", "steps": 3, "sampler_name": "Euler a", "seed": 5, "width": 64, "height": 64}
HAS_UPSCALERS = importlib.util.find_spec("modules.postprocess.upscalers") is not None


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def post(client, **fields):
    return client.post("/sdapi/v1/txt2img", json={**FAST, **fields})


def ok(client, **fields):
    response = post(client, **fields)
    assert response.status_code == 200, response.text
    body = response.json()
    return body, json.loads(body["info"])


def error_fields(response) -> set[str]:
    return {tuple(e["loc"])[1] for e in response.json()["detail"]}


def test_enable_hr_scale_gives_the_target_size_and_a1111_info(client):
    body, info = ok(client, enable_hr=True, hr_scale=2, hr_second_pass_steps=2, denoising_strength=0.6)
    image = decode(body["images"][0])
    assert image.size == (128, 128)
    assert (info["width"], info["height"]) == (64, 64)  # A1111: the first pass size
    assert info["denoising_strength"] == 0.6
    extra = info["extra_generation_params"]
    assert extra["Hires upscale"] == 2 and extra["Hires steps"] == 2 and extra["Hires upscaler"] == "Latent"
    params = parse_infotext(info["infotexts"][0]).params
    assert params["Size"] == "64x64" and params["Denoising strength"] == "0.6"


def test_resize_to_one_side_keeps_the_aspect_ratio(client):
    body, info = ok(client, enable_hr=True, hr_resize_x=96, hr_upscaler="Latent (nearest-exact)", width=64, height=96)
    assert decode(body["images"][0]).size == (96, 144)
    assert "Hires resize: 96x0" in info["infotexts"][0]


def test_without_enable_hr_the_hr_fields_change_nothing(client):
    body, info = ok(client, hr_scale=3, denoising_strength=0.3)
    assert decode(body["images"][0]).size == (64, 64)
    assert "Hires" not in info["infotexts"][0] and info["denoising_strength"] is None


def test_infotext_field_reproduces_the_hires_job(client):
    first, info = ok(client, enable_hr=True, hr_resize_x=128, hr_resize_y=96, hr_second_pass_steps=2,
                     hr_sampler_name="DPM++ 2M", hr_scheduler="Karras", hr_prompt="a red circle, detailed",
                     hr_negative_prompt="noise", hr_cfg=5.0, denoising_strength=0.55, seed=99)
    text = info["infotexts"][0]
    response = client.post("/sdapi/v1/txt2img", json={"infotext": text})  # nothing else sent: all from it
    assert response.status_code == 200, response.text
    again, info2 = response.json(), json.loads(response.json()["info"])
    assert info2["infotexts"][0] == text
    assert decode(again["images"][0]).size == (128, 96)
    assert np.array_equal(px(decode(again["images"][0])), px(decode(first["images"][0])))


def test_sent_fields_win_over_the_infotext(client):
    _, info = ok(client, enable_hr=True, hr_scale=2, denoising_strength=0.5)
    body, info2 = ok(client, infotext=info["infotexts"][0], hr_scale=1.5)
    assert decode(body["images"][0]).size == (96, 96)
    off, info3 = ok(client, infotext=info["infotexts"][0], enable_hr=False)
    assert decode(off["images"][0]).size == (64, 64) and "Hires" not in info3["infotexts"][0]


def test_unknown_hr_sampler_is_refused_like_sampler_name(client):
    response = post(client, enable_hr=True, hr_sampler_name="Eulerr")
    assert response.status_code == 404
    assert "hr_sampler_name" in response.text and "Euler" in response.json()["valid"]
    response = post(client, enable_hr=True, hr_scheduler="Karas")
    assert response.status_code == 404 and "hr_scheduler" in response.text


def test_a1111_use_same_sampler_values_mean_the_first_pass(client):
    body, info = ok(client, enable_hr=True, hr_sampler_name="Use same sampler", hr_scheduler="Use same scheduler")
    assert decode(body["images"][0]).size == (128, 128)
    assert "Hires sampler" not in info["infotexts"][0]


@pytest.mark.parametrize("fields, named", [
    (dict(hr_scale=16), "hr_scale"),
    (dict(hr_second_pass_steps=-1), "hr_second_pass_steps"),
    (dict(hr_resize_x=-8), "hr_resize_x"),
    (dict(hr_cfg=99), "hr_cfg"),
    (dict(hr_scale=8, width=512, height=512), "hr_scale"),  # 4096x4096: past the size limit
    (dict(denoising_strength=1.5), "denoising_strength"),
])
def test_bad_hires_values_get_a_422_naming_the_field(client, fields, named):
    response = post(client, enable_hr=True, **fields)
    assert response.status_code == 422, response.text
    assert named in error_fields(response)
    assert post(client).status_code == 200  # the server keeps serving


def test_old_firstphase_fields_run_the_first_pass_at_that_size(client):
    body, info = ok(client, enable_hr=True, firstphase_width=64, firstphase_height=64, width=128, height=96)
    assert decode(body["images"][0]).size == (128, 96)
    assert (info["width"], info["height"]) == (64, 64)
    assert any("firstphase" in w for w in info["warnings"])


@pytest.mark.skipif(not HAS_UPSCALERS, reason="modules/postprocess/upscalers.py is not there yet")
def test_unknown_hr_upscaler_is_a_422_naming_hr_upscaler(client):
    response = post(client, enable_hr=True, hr_upscaler="4x-NoSuchModel")
    assert response.status_code == 422, response.text
    assert "hr_upscaler" in response.text and "Lanczos" in response.text


@pytest.mark.skipif(not HAS_UPSCALERS, reason="modules/postprocess/upscalers.py is not there yet")
def test_lanczos_hr_upscaler(client):
    body, info = ok(client, enable_hr=True, hr_upscaler="Lanczos", hr_scale=1.5)
    assert decode(body["images"][0]).size == (96, 96)
    assert "Hires upscaler: Lanczos" in info["infotexts"][0]
