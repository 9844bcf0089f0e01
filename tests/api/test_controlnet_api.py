"""sd-webui-controlnet's HTTP API on the real server (the app loads extensions-builtin/controlnet):
the /controlnet/* routes and their bodies, /controlnet/detect against the preprocessor itself, and
txt2img / img2img with `alwayson_scripts.controlnet.args` units on the embedded model, with a
random-weight ControlNet for its UNet in the server's models/ControlNet folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.api.helpers import b64_png, decode

DETECT = "/controlnet/detect"
ALICE = ("alice", "s3cret")  # the auth_server fixture's user
CN_NAME = "api_cn_shapes64"  # the random-weight ControlNet this module puts in models/ControlNet
FAST = {"prompt": "a red circle", "negative_prompt": "", "steps": 3, "sampler_name": "Euler", "seed": 4242,
        "width": 64, "height": 64}


def errors(response) -> dict[str, str]:
    """field path (without the leading "body") -> message"""
    return {".".join(str(p) for p in e["loc"][1:]): e["msg"] for e in response.json()["detail"]}


def shapes(width: int = 96, height: int = 80) -> Image.Image:
    """A picture with edges: a disc and a bar on a flat ground."""
    image = Image.new("RGB", (width, height), (30, 30, 30))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 50, 50), fill=(230, 230, 230))
    draw.rectangle((55, 20, 85, 70), fill=(120, 200, 40))
    return image


def silhouette(size: int = 64) -> Image.Image:
    """A control map like the embedded ControlNet's: a white shape on black."""
    image = Image.new("RGB", (size, size), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((8, 24, 40, 56), fill=(255, 255, 255))
    return image


def legacy_hash(path: Path) -> str:
    """A1111's legacy 8-hex model hash (sd_models.model_hash), which sd-webui-controlnet's titles carry."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def cn_ext(ctx):
    ext = ctx.extensions.extension_set.find("controlnet")
    assert ext is not None, "extensions-builtin/controlnet did not load"
    return ext


@pytest.fixture(scope="module")
def cn_model(data_dir, cn_ext) -> Path:
    """A random-weight diffusers ControlNet folder for the embedded UNet (zero convs not zero, so the
    control changes the picture) in the server's models/ControlNet; rescanned into the library."""
    from modules.paths import EMBEDDED_MODEL_DIR
    from tests.controlnet_files import make_controlnet_for_unet

    folder = data_dir / "models" / "ControlNet" / CN_NAME
    if not folder.exists():
        unet_config = json.loads((EMBEDDED_MODEL_DIR / "unet" / "config.json").read_text())
        make_controlnet_for_unet(folder, unet_config, seed=3, layout="folder")
    cn_ext.library.refresh()
    return folder


def cn_title(folder: Path) -> str:
    return f"{folder.name} [{legacy_hash(folder / 'diffusion_pytorch_model.safetensors')}]"


# ---------------------------------------------------------------------------------------------
# the listing routes


def test_version_and_settings(client):
    assert client.get("/controlnet/version").json() == {"version": 3}
    settings = client.get("/controlnet/settings")
    assert settings.status_code == 200
    assert set(settings.json()) == {"control_net_unit_count"}
    assert settings.json()["control_net_unit_count"] >= 3  # the issue: at least 3 units at once
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    assert {"/controlnet/version", "/controlnet/model_list", "/controlnet/module_list", "/controlnet/settings",
            DETECT} <= set(schema.json()["paths"])


def test_model_list_titles_carry_the_short_hash_and_update_rescans(client, data_dir, cn_ext, cn_model):
    weights = cn_model / "diffusion_pytorch_model.safetensors"
    title = f"{CN_NAME} [{legacy_hash(weights)}]"
    body = client.get("/controlnet/model_list").json()
    assert set(body) == {"model_list"}
    assert title in body["model_list"]
    assert "None" not in body["model_list"]

    added = data_dir / "models" / "ControlNet" / "later_copy.safetensors"
    added.write_bytes(weights.read_bytes())
    try:
        assert not any(t.startswith("later_copy ") for t in client.get("/controlnet/model_list?update=false")
                       .json()["model_list"])
        listed = client.get("/controlnet/model_list", params={"update": "true"}).json()["model_list"]
        assert f"later_copy [{legacy_hash(added)}]" in listed
    finally:
        added.unlink()
        cn_ext.library.refresh()


def test_module_list_names_details_and_unavailable_ones(client, cn_ext):
    body = client.get("/controlnet/module_list").json()
    assert set(body) == {"module_list", "module_detail", "module_unavailable"}
    names = body["module_list"]
    assert names[0] == "none"
    for name in ("canny", "invert", "tile_resample", "inpaint_only", "shuffle", "scribble_xdog",
                 "lineart_standard", "blur_gaussian", "threshold", "color"):
        assert name in names, name
    assert set(body["module_detail"]) == set(names)
    canny = body["module_detail"]["canny"]
    assert canny["model_free"] is False  # sd-webui-controlnet's meaning: it needs a ControlNet model
    assert [s["name"] for s in canny["sliders"]][0].lower().endswith("resolution")
    low, high = canny["sliders"][1:]
    assert low["name"].endswith("Low Threshold") and high["name"].endswith("High Threshold")
    assert ({k: low[k] for k in ("value", "min", "max", "step")},
            {k: high[k] for k in ("value", "min", "max", "step")}) == ({"value": 100, "min": 1, "max": 255, "step": 1},
                                                                       {"value": 200, "min": 1, "max": 255, "step": 1})
    for slider in canny["sliders"]:
        assert set(slider) == {"name", "value", "min", "max", "step"}
    assert body["module_detail"]["none"]["sliders"] in ([], [None, None, None], [None])

    # modules with weights are listed, and those whose files are absent say which files to put where
    assert "depth_midas" in names or "depth" in names
    unavailable = body["module_unavailable"]
    assert "canny" not in unavailable
    assert set(unavailable) == {n for n in names if not cn_ext.preprocessors.available(n)}
    with_weights = [n for n in unavailable if cn_ext.preprocessors.entry(n).implemented]
    assert "softedge_hed" in with_weights or "lineart" in with_weights
    for name in with_weights:
        for path in cn_ext.preprocessors.missing(name):  # each absent file, with where it goes
            assert str(path) in unavailable[name]
            assert str(path).startswith((str(cn_ext.annotator_dir), str(cn_ext.clip_vision_dir)))

    aliased = client.get("/controlnet/module_list", params={"alias_names": "true"}).json()
    assert "invert (from white bg & black line)" in aliased["module_list"]
    assert set(aliased["module_detail"]) == set(aliased["module_list"])
    assert len(aliased["module_list"]) == len(names)


# ---------------------------------------------------------------------------------------------
# /controlnet/detect


def test_detect_canny_returns_the_preprocessors_own_map(client, cn_ext):
    from controlnet_ext.preprocessors import PreprocessInput

    source = shapes()
    r = client.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": [b64_png(source)] * 2,
                                  "controlnet_processor_res": 64, "controlnet_threshold_a": 50,
                                  "controlnet_threshold_b": 150})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["info"] == "Success"
    assert len(body["images"]) == 2
    expected = cn_ext.preprocessors.run("canny", PreprocessInput(image=rgb(source), resolution=64,
                                                                 threshold_a=50, threshold_b=150)).image
    for encoded in body["images"]:
        got = rgb(decode(encoded))
        assert got.shape == expected.shape
        assert np.array_equal(got, expected)
    assert expected.max() == 255 and expected.min() == 0  # edges were found: the test can tell maps apart

    # -1 (the default of every number) takes the module's slider defaults, as sd-webui-controlnet does
    defaults = client.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": [b64_png(source)]})
    assert defaults.status_code == 200, defaults.text
    entry = cn_ext.preprocessors.entry("canny")
    res, a, b = (s.value for s in (entry.resolution_slider, entry.threshold_a_slider, entry.threshold_b_slider))
    expected = cn_ext.preprocessors.run("canny", PreprocessInput(image=rgb(source), resolution=int(res),
                                                                 threshold_a=a, threshold_b=b)).image
    assert np.array_equal(rgb(decode(defaults.json()["images"][0])), expected)


def test_detect_alias_name_and_masked_module(client):
    source = shapes(64, 64)
    r = client.post(DETECT, json={"controlnet_module": "invert (from white bg & black line)",
                                  "controlnet_input_images": [b64_png(source)], "controlnet_processor_res": 64})
    assert r.status_code == 200, r.text
    assert np.array_equal(rgb(decode(r.json()["images"][0])), 255 - rgb(source))

    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    r = client.post(DETECT, json={"controlnet_module": "inpaint_only", "controlnet_input_images": [b64_png(source)],
                                  "controlnet_masks": [b64_png(mask)], "controlnet_processor_res": 64})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]).size == (64, 64)


def test_detect_reads_transparent_pixels_as_white(client):
    clear = Image.new("RGBA", (64, 64), (10, 200, 30, 0))  # fully transparent: white, as sd-webui-controlnet reads it
    r = client.post(DETECT, json={"controlnet_module": "invert", "controlnet_input_images": [b64_png(clear)],
                                  "controlnet_processor_res": 64})
    assert r.status_code == 200, r.text
    assert (rgb(decode(r.json()["images"][0])) == 0).all()


def test_run_detect_the_ui_preview_path(cn_ext):
    """What the UI's preview button calls: the same queue, the same map, the same refusals."""
    from controlnet_ext.detect import DetectInputError, DetectRequest, run_detect
    from controlnet_ext.preprocessors import PreprocessInput

    source = shapes()
    maps = run_detect(cn_ext, DetectRequest("canny", [source], [], 64, 60, 120), owner=None)
    expected = cn_ext.preprocessors.run("canny", PreprocessInput(image=rgb(source), resolution=64,
                                                                 threshold_a=60, threshold_b=120)).image
    assert len(maps) == 1 and np.array_equal(rgb(maps[0]), expected)
    with pytest.raises(DetectInputError) as err:
        run_detect(cn_ext, DetectRequest("no_such_module", [source], [], 64, -1, -1), owner=None)
    assert err.value.field == "module" and "canny" in err.value.message


def test_detect_refuses_bad_input_naming_the_field_and_keeps_serving(client, ctx, cn_ext):
    image = b64_png(shapes())

    r = client.post(DETECT, json={"controlnet_module": "no_such_module", "controlnet_input_images": [image]})
    assert r.status_code == 422, r.text
    msg = errors(r)["controlnet_module"]
    assert "no_such_module" in msg and "canny" in msg  # the valid names are listed

    r = client.post(DETECT, json={"controlnet_module": "canny"})
    assert r.status_code == 422 and "controlnet_input_images" in errors(r), r.text

    r = client.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": [image, "not an image!"]})
    assert r.status_code == 422 and "base64" in errors(r)["controlnet_input_images.1"], r.text

    r = client.post(DETECT, json={"controlnet_module": "inpaint_only", "controlnet_input_images": [image]})
    assert r.status_code == 422 and "controlnet_masks" in errors(r), r.text

    r = client.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": [image],
                                  "controlnet_processor_res": 100000})
    assert r.status_code == 422 and "controlnet_processor_res" in errors(r), r.text

    r = client.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": [image],
                                  "controlnet_threshold_a": 999})
    assert r.status_code == 422 and "controlnet_threshold_a" in errors(r), r.text

    r = client.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": "x"})
    assert r.status_code == 422 and "controlnet_input_images" in errors(r), r.text

    r = client.post(DETECT, json={"controlnet_module": "ip-adapter_clip_sd15", "controlnet_input_images": [image]})
    assert r.status_code == 422 and "controlnet_module" in errors(r), r.text

    # a module whose weights are absent: the message names the file to put where
    missing = next(n for n in client.get("/controlnet/module_list").json()["module_unavailable"]
                   if cn_ext.preprocessors.entry(n).implemented and not n.startswith("ip-adapter"))
    r = client.post(DETECT, json={"controlnet_module": missing, "controlnet_input_images": [image]})
    assert r.status_code == 422, r.text
    for path in cn_ext.preprocessors.missing(missing):
        assert f"put {path.name} at {path}" in errors(r)["controlnet_module"]
    listed_only = [n for n in cn_ext.preprocessors.names() if not cn_ext.preprocessors.entry(n).implemented]
    for name in listed_only[:1]:
        r = client.post(DETECT, json={"controlnet_module": name, "controlnet_input_images": [image]})
        assert r.status_code == 422 and "not implemented" in errors(r)["controlnet_module"], r.text

    # too large for the app's limit (max_image_pixels), refused from the image's header
    old = ctx.settings.get().max_image_pixels
    ctx.settings.update({"max_image_pixels": 64 * 64})
    try:
        r = client.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": [image]})
        assert r.status_code == 422, r.text
        assert "controlnet_input_images.0" in errors(r)
    finally:
        ctx.settings.update({"max_image_pixels": old})

    ok = client.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": [image],
                                   "controlnet_processor_res": 64})
    assert ok.status_code == 200, ok.text


def test_auth_covers_the_controlnet_routes(auth_server):
    with httpx.Client(base_url=auth_server.url, timeout=60) as anon:
        for method, path in [("GET", "/controlnet/version"), ("GET", "/controlnet/model_list"),
                             ("GET", "/controlnet/module_list"), ("GET", "/controlnet/settings"),
                             ("POST", DETECT)]:
            r = anon.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 401, (path, r.text)
    with httpx.Client(base_url=auth_server.url, timeout=60, auth=("alice", "wrong")) as wrong:
        assert wrong.get("/controlnet/model_list").status_code == 401
    with httpx.Client(base_url=auth_server.url, timeout=120, auth=ALICE) as alice:
        assert alice.get("/controlnet/version").json() == {"version": 3}
        r = alice.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": [b64_png(shapes())],
                                     "controlnet_processor_res": 64})
        assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------------------
# txt2img / img2img with sd-webui-controlnet payloads


def unit(model: str, image: Image.Image, **fields) -> dict:
    return {"input_image": b64_png(image), "module": "none", "model": model, "weight": 1.0,
            "resize_mode": "Just Resize", "processor_res": 64, "guidance_start": 0.0, "guidance_end": 1.0,
            "control_mode": "Balanced", "pixel_perfect": False, "lowvram": False, **fields}


def txt2img(client, *units: dict, **fields) -> httpx.Response:
    body = {**FAST, **fields}
    if units:
        body["alwayson_scripts"] = {"controlnet": {"args": list(units)}}
    return client.post("/sdapi/v1/txt2img", json=body)


def generated(response) -> list[np.ndarray]:
    assert response.status_code == 200, response.text
    return [rgb(decode(b)) for b in response.json()["images"]]


def test_txt2img_unit_changes_the_picture_and_appends_its_map(client, cn_model):
    title = cn_title(cn_model)
    control = silhouette()
    plain = generated(txt2img(client))
    assert len(plain) == 1

    r = txt2img(client, unit(title, control, module="canny", threshold_a=100, threshold_b=200))
    images = generated(r)
    assert len(images) == 2  # the generation, then the detected map (sd-webui-controlnet's order)
    assert not np.array_equal(images[0], plain[0])  # the control acts
    detect = client.post(DETECT, json={"controlnet_module": "canny", "controlnet_input_images": [b64_png(control)],
                                       "controlnet_processor_res": 64, "controlnet_threshold_a": 100,
                                       "controlnet_threshold_b": 200})
    assert np.array_equal(images[1], rgb(decode(detect.json()["images"][0])))  # the same map /detect shows

    info = json.loads(r.json()["info"])
    assert len(info["infotexts"]) == 1  # the map is no generation: no infotext of its own
    text = info["infotexts"][0]
    assert 'ControlNet 0: "Module: canny, Model: ' + title + ", Weight: 1" in text
    assert "ControlNet 0" in info["extra_generation_params"]


def test_enum_forms_and_image_field_names_are_equivalent(client, cn_model):
    """Strings or their ints for resize_mode / control_mode; `image` or `input_image`; the same pixels."""
    title, control = cn_title(cn_model), silhouette()
    by_name = generated(txt2img(client, unit(title, control, resize_mode="Crop and Resize",
                                             control_mode="My prompt is more important")))
    as_ints = unit(title, control, resize_mode=1, control_mode=1)
    as_ints["image"] = as_ints.pop("input_image")
    by_int = generated(txt2img(client, as_ints))
    assert np.array_equal(by_name[0], by_int[0])
    as_dict = unit(title, control, resize_mode=1, control_mode=1)  # {"image": ..., "mask": ...}, a blank mask
    as_dict["image"] = {"image": as_dict.pop("input_image"), "mask": b64_png(Image.new("RGB", control.size))}
    assert np.array_equal(generated(txt2img(client, as_dict))[0], by_int[0])
    default_mode = generated(txt2img(client, unit(title, control, resize_mode=1, control_mode=0)))
    assert not np.array_equal(by_name[0], default_mode[0])  # control_mode is applied, not ignored


def test_weight_zero_and_disabled_units_give_the_pixels_of_no_controlnet(client, cn_model):
    title, control = cn_title(cn_model), silhouette()
    plain = generated(txt2img(client))[0]
    weight0 = generated(txt2img(client, unit(title, control, weight=0)))
    assert np.array_equal(weight0[0], plain)
    disabled = txt2img(client, unit(title, control, enabled=False))
    images = generated(disabled)
    assert len(images) == 1  # a disabled unit adds no map
    assert np.array_equal(images[0], plain)
    assert "ControlNet 0" not in json.loads(disabled.json()["info"])["infotexts"][0]


def test_img2img_unit_uses_the_img2img_input_when_it_has_no_image(client, cn_model):
    title, source = cn_title(cn_model), silhouette()
    body = {**FAST, "init_images": [b64_png(source)], "denoising_strength": 0.8}
    plain = client.post("/sdapi/v1/img2img", json=body)
    assert plain.status_code == 200, plain.text
    no_image = unit(title, source)
    del no_image["input_image"]
    r = client.post("/sdapi/v1/img2img", json={**body, "alwayson_scripts": {"ControlNet": {"args": [no_image]}}})
    images = generated(r)
    assert len(images) == 2
    assert not np.array_equal(images[0], rgb(decode(plain.json()["images"][0])))
    assert np.array_equal(images[1], rgb(source))  # module none: the img2img input is the map
    assert "ControlNet 0" in json.loads(r.json()["info"])["infotexts"][0]


def test_unknown_model_or_module_is_a_422_naming_the_unit_field(client, cn_model):
    title, control = cn_title(cn_model), silhouette()
    r = txt2img(client, unit("control_no_such_model [00000000]", control))
    assert r.status_code == 422, r.text
    found = {k: v for k, v in errors(r).items() if k.endswith("args.0.model")}
    assert found, r.text
    assert title in next(iter(found.values()))  # the valid names are listed

    r = txt2img(client, unit(title, control), unit(title, control, module="no_such_module"))
    assert r.status_code == 422, r.text
    found = {k: v for k, v in errors(r).items() if k.endswith("args.1.module")}
    assert found and "canny" in next(iter(found.values())), r.text

    r = txt2img(client, unit(title, control, input_image="not base64 at all!"))
    assert r.status_code == 422 and any(k.startswith("alwayson_scripts") for k in errors(r)), r.text

    assert len(generated(txt2img(client))) == 1  # still serving


def test_a_controlnet_of_another_family_is_a_422_naming_both(client, ctx, data_dir, cn_ext):
    """An SD 1.5 ControlNet (v1.1 single-file layout) with the embedded checkpoint (its own family)."""
    from tests.controlnet_files import make_sd15_controlnet

    path = data_dir / "models" / "ControlNet" / "control_v11p_sd15_canny.safetensors"
    if not path.exists():
        make_sd15_controlnet(path)
    cn_ext.library.refresh()
    title = f"control_v11p_sd15_canny [{legacy_hash(path)}]"
    r = txt2img(client, unit(title, silhouette()))
    assert r.status_code == 422, r.text
    found = {k: v for k, v in errors(r).items() if k.endswith("args.0.model")}
    assert found, r.text
    message = next(iter(found.values()))
    assert title in message and ctx.registry.current_title() in message  # names both
    assert len(generated(txt2img(client))) == 1  # still serving


def test_txt2img_unit_without_an_image_is_a_422_naming_its_image_field(client, cn_model):
    """txt2img has no img2img input to fall back on: the unit's image is missing, the client's to fix."""
    no_image = unit(cn_title(cn_model), silhouette())
    del no_image["input_image"]
    r = txt2img(client, unit(cn_title(cn_model), silhouette()), no_image)
    assert r.status_code == 422, r.text
    found = {k: v for k, v in errors(r).items() if k.endswith("args.1.image")}
    assert found and "no input image" in next(iter(found.values())), r.text
    assert len(generated(txt2img(client))) == 1  # still serving
