"""restore_faces, tiling and the NSFW filter over the real HTTP server (A1111's fields; a field left
out follows the face_restoration / tiling setting, as in A1111 1.6+)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.api.helpers import b64_png, decode
from tests.face_model_files import write_restorer
from tests.safety_checker_files import write_checker

FAST = {"prompt": "a red circle", "steps": 2, "sampler_name": "Euler", "seed": 3, "width": 64, "height": 64}


def info(response) -> dict:
    return json.loads(response.json()["info"])


def px(b64: str) -> np.ndarray:
    return np.asarray(decode(b64).convert("RGB"), dtype=np.int16)


def locs(response) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


@pytest.fixture()
def settings(ctx):
    """Change settings for one test; the shared server gets its values back afterwards."""
    before = ctx.settings.get()
    changed: list[str] = []

    def change(**values):
        changed.extend(values)
        ctx.settings.update(values)

    yield change
    if changed:
        ctx.settings.update({k: getattr(before, k) for k in changed})


def test_tiling_runs_and_is_written_and_read_back(client):
    plain = client.post("/sdapi/v1/txt2img", json=FAST)
    tiled = client.post("/sdapi/v1/txt2img", json={**FAST, "tiling": True})
    assert plain.status_code == 200 and tiled.status_code == 200, tiled.text
    text = info(tiled)["infotexts"][0]
    assert text.endswith("Tiling: True") or "Tiling: True," in text
    assert "Tiling" not in info(plain)["infotexts"][0]
    assert "Tiling" not in info(tiled)["extra_generation_params"]  # a core key in A1111
    assert not np.array_equal(px(plain.json()["images"][0]), px(tiled.json()["images"][0]))
    # the infotext alone reproduces the tiled job
    again = client.post("/sdapi/v1/txt2img", json={"infotext": text})
    assert again.status_code == 200, again.text
    assert np.array_equal(px(again.json()["images"][0]), px(tiled.json()["images"][0]))


def test_tiling_left_out_follows_the_setting(client, settings):
    settings(tiling=True)
    r = client.post("/sdapi/v1/txt2img", json=FAST)
    assert r.status_code == 200 and "Tiling: True" in info(r)["infotexts"][0]
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "tiling": False})
    assert r.status_code == 200 and "Tiling" not in info(r)["infotexts"][0]


def test_restore_faces_without_the_restorer_is_422_naming_the_field_and_the_file(client, data_dir):
    r = client.post("/sdapi/v1/txt2img", json={**FAST, "restore_faces": True})
    assert r.status_code == 422, r.text
    assert "body.restore_faces" in locs(r)
    message = r.json()["detail"][0]["msg"]
    assert "codeformer.pth" in message and str(data_dir / "models" / "Codeformer") in message
    assert client.post("/sdapi/v1/txt2img", json=FAST).status_code == 200  # the server carries on


@pytest.fixture()
def codeformer(data_dir):
    """CodeFormer (random weights) where the server's engine looks for it, for one test."""
    path = write_restorer(data_dir / "models", "CodeFormer")
    yield path
    path.unlink()


def test_restore_faces_over_http(client, codeformer):
    from skimage import data

    photo = data.astronaut()  # one face near the top middle
    body = {**FAST, "init_images": [b64_png(Image.fromarray(photo))], "width": 512,
            "height": 512, "denoising_strength": 0.0, "restore_faces": True}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    meta = info(r)
    assert meta["restore_faces"] is True and meta["face_restoration_model"] == "CodeFormer"
    assert "Seed: 3, Face restoration: CodeFormer, Size: 512x512" in meta["infotexts"][0]
    out = px(r.json()["images"][0])
    assert np.abs(out[80:220, 170:320] - photo[80:220, 170:320]).mean() > 5  # the face changed
    assert np.array_equal(out[400:, :100], photo[400:, :100])  # far from it, nothing did
    plain = info(client.post("/sdapi/v1/img2img", json={**body, "restore_faces": False}))
    assert plain["restore_faces"] is False and plain["face_restoration_model"] is None


def test_nsfw_filter_without_a_checker_is_503_naming_what_to_install(client, settings, data_dir):
    settings(filter_nsfw=True)
    r = client.post("/sdapi/v1/txt2img", json=FAST)
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    for part in (str(data_dir / "models" / "safety_checker"), "config.json", "preprocessor_config.json"):
        assert part in detail
    settings(filter_nsfw=False)
    assert client.post("/sdapi/v1/txt2img", json=FAST).status_code == 200


def test_nsfw_filter_blacks_flagged_images_and_info_says_which(client, settings, data_dir):
    folder = write_checker(data_dir / "models" / "safety_checker", flag_all=True)
    try:
        settings(filter_nsfw=True)
        r = client.post("/sdapi/v1/txt2img", json={**FAST, "batch_size": 2})
        assert r.status_code == 200, r.text
        images = r.json()["images"]
        assert len(images) >= 2
        assert all(px(b64).max() == 0 for b64 in images)
        blacked = [w for w in info(r)["warnings"] if "replaced by a black image" in w]
        assert [w.split(" (")[0] for w in blacked] == ["image 1", "image 2"]
    finally:
        shutil.rmtree(folder)
