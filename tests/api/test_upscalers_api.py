"""/sdapi/v1/upscalers, /latent-upscale-modes and /realesrgan-models over the real HTTP server, with
upscaler files (random weights, real layouts) in the folders, one of them given by --esrgan-models-path."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from modules.api.errors import ErrorMapper
from modules.app_factory import build_paths
from modules.postprocess.services import Postprocessors
from modules.postprocess.upscalers import UnknownUpscalerError
from tests import upscaler_files as uf
from tests.api.conftest import Server, make_args

A1111_LATENT_MODES = ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                      "Latent (nearest)", "Latent (nearest-exact)"]


@pytest.fixture(scope="module")
def upscaler_server(ctx, data_dir, tmp_path_factory):
    """The shared context with its own upscaler folders: models/RealESRGAN in a data folder of its
    own, and ESRGAN models in a folder given by --esrgan-models-path."""
    from modules.api import create_api_app

    root = tmp_path_factory.mktemp("upscaler-api")
    esrgan_dir = root / "elsewhere-esrgan"
    uf.write_model(esrgan_dir / "4x_Community.safetensors", uf.esrgan_old_arch())
    uf.write_model(root / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth", uf.realesrgan_x4plus())
    uf.write_model(root / "models" / "RealESRGAN" / "realesr-general-x4v3.pth", uf.srvgg_compact())
    uf.write_garbage(root / "models" / "RealESRGAN" / "RealESRGAN_x2plus.pth")
    uf.write_model(root / "models" / "ESRGAN" / "4x_NotUsed.pth", uf.esrgan_old_arch())  # the flag replaces this folder
    args = make_args(data_dir, "--esrgan-models-path", str(esrgan_dir))
    paths = dataclasses.replace(build_paths(args), data_dir=root)
    post = Postprocessors(paths, ctx.settings, device="cpu")
    with Server(create_api_app(dataclasses.replace(ctx, args=args, postprocess=post))) as srv:
        yield srv, root, esrgan_dir


@pytest.fixture()
def api(upscaler_server):
    srv, _, _ = upscaler_server
    with httpx.Client(base_url=srv.url + "/sdapi/v1", timeout=60) as c:
        yield c


def test_upscalers_lists_builtins_and_models_in_a1111_shape(api, upscaler_server):
    _, root, esrgan_dir = upscaler_server
    resp = api.get("/upscalers")
    assert resp.status_code == 200
    body = resp.json()
    assert [u["name"] for u in body] == ["None", "Lanczos", "Nearest", "4x_Community", "R-ESRGAN 4x+",
                                        "R-ESRGAN General 4xV3"]
    assert all(set(u) == {"name", "model_name", "model_path", "model_url", "scale"} for u in body)
    assert body[0] == {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": None}
    by_name = {u["name"]: u for u in body}
    assert by_name["4x_Community"]["model_path"] == str(esrgan_dir / "4x_Community.safetensors")
    assert by_name["R-ESRGAN 4x+"] == {"name": "R-ESRGAN 4x+", "model_name": "ESRGAN",
                                       "model_path": str(root / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth"),
                                       "model_url": None, "scale": 4.0}
    assert by_name["R-ESRGAN General 4xV3"]["model_name"] == "RealESRGAN Compact"


def test_a_model_dropped_in_is_listed_without_restart(api, upscaler_server):
    _, _, esrgan_dir = upscaler_server
    path = uf.write_model(esrgan_dir / "2x_Dropped.pth", uf.esrgan_old_arch(scale=2))
    try:
        names = [u["name"] for u in api.get("/upscalers").json()]
        assert "2x_Dropped" in names
        assert {u["name"]: u["scale"] for u in api.get("/upscalers").json()}["2x_Dropped"] == 2.0
    finally:
        path.unlink()
    assert "2x_Dropped" not in [u["name"] for u in api.get("/upscalers").json()]


def test_latent_upscale_modes(api):
    resp = api.get("/latent-upscale-modes")
    assert resp.status_code == 200 and resp.json() == [{"name": n} for n in A1111_LATENT_MODES]


def test_realesrgan_models_lists_the_releases_and_where_each_goes(api, upscaler_server):
    _, root, _ = upscaler_server
    resp = api.get("/realesrgan-models")
    assert resp.status_code == 200
    body = {m["name"]: m for m in resp.json()}
    assert list(body) == ["R-ESRGAN General 4xV3", "R-ESRGAN General WDN 4xV3", "R-ESRGAN AnimeVideo",
                          "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "R-ESRGAN 2x+"]
    folder = root / "models" / "RealESRGAN"
    assert body["R-ESRGAN 4x+"] == {
        "name": "R-ESRGAN 4x+", "scale": 4, "installed": True, "reason": None,
        "path": "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
        "local_path": str(folder / "RealESRGAN_x4plus.pth")}
    anime = body["R-ESRGAN 4x+ Anime6B"]
    assert not anime["installed"] and anime["local_path"] == str(folder / "RealESRGAN_x4plus_anime_6B.pth")
    broken = body["R-ESRGAN 2x+"]  # a corrupt file: not installed, with the reason
    assert not broken["installed"] and broken["scale"] == 2 and broken["reason"]


def test_upscaler_routes_need_no_refresh_route(api):
    # A1111 has no /refresh-upscalers; the folders are re-read on every listing instead
    assert api.post("/refresh-upscalers").status_code == 404


def test_unknown_upscaler_maps_to_422_naming_the_field():
    error = UnknownUpscalerError("upscaler_1", "R-ESRGAN 9x", ["None", "Lanczos", "Nearest"])
    response = ErrorMapper().to_response(error)
    assert response.status_code == 422
    import json

    body = json.loads(response.body)
    assert body["detail"][0]["loc"] == ["body", "upscaler_1"]
    assert "R-ESRGAN 9x" in body["detail"][0]["msg"] and body["valid"] == ["None", "Lanczos", "Nearest"]
