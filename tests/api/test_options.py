"""GET/POST /sdapi/v1/options against a real server: A1111's keys and defaults, folders that
must stay in the data folder, checkpoints that cannot load, the current model's title, styles
that do not exist and inpainting_mask_weight on a 9-channel model.

Tests that change the settings or the model folders run on their own context and data folder
(`own`), so the session's shared server never sees their files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.api.conftest import MODEL_A, Server
from tests.api.helpers import b64_png, centre_mask, decode, picture
from tests.checkpoint_factory import make_empty, make_malicious_ckpt, make_truncated
from tests.tiny_model import save_tiny_model_dir

FAST = {"steps": 3, "sampler_name": "Euler a"}
EMBEDDED_TITLE = "shapes64 [54d0762e74]"


def locs(response) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A fresh server over its own data folder: a 9-channel tiny model and three unusable files."""
    from modules.api import create_api_app
    from modules.app_factory import create_context
    from modules.cmd_args import parse_args
    from modules.paths import EMBEDDED_MODEL_DIR

    root = tmp_path_factory.mktemp("options-data")
    models = root / "models" / "Stable-diffusion"
    save_tiny_model_dir(models / "tiny-inpaint", seed=5, in_channels=9)
    make_malicious_ckpt(models / "evil.ckpt", root / "pwned")
    make_empty(models / "empty.safetensors")
    source = next(EMBEDDED_MODEL_DIR.rglob("*.safetensors"))
    make_truncated(models / "truncated.safetensors", source)
    (root / "styles.csv").write_text('name,prompt,negative_prompt\nsunny,"{prompt}, sunny day",blurry\n',
                                     encoding="utf-8")
    ctx = create_context(parse_args(["--data-dir", str(root), "--use-cpu", "--api", "--nowebui",
                                     "--ckpt", MODEL_A]))
    with Server(create_api_app(ctx)) as srv, httpx.Client(base_url=srv.url, timeout=120) as client:
        yield ctx, client, root
    ctx.queue.shutdown()


def saved(root: Path) -> dict:
    path = root / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


# ------------------------------------------------------------------------------------- item 11
def test_a_fresh_server_names_the_current_model_in_its_options(own):
    ctx, client, _ = own
    options = client.get("/sdapi/v1/options").json()  # the first request of this server
    assert options["sd_model_checkpoint"] == EMBEDDED_TITLE
    assert EMBEDDED_TITLE in [m["title"] for m in client.get("/sdapi/v1/sd-models").json()]


# ------------------------------------------------------------------------------------- item 13
def test_options_list_a1111_keys_with_a1111_defaults(client):
    options = client.get("/sdapi/v1/options").json()
    expected = {"send_seed": True, "send_size": True, "inpainting_mask_weight": 1.0,
                "img2img_color_correction": False, "samples_format": "png", "jpeg_quality": 80,
                "initial_noise_multiplier": 1.0, "eta_ancestral": 1.0, "eta_noise_seed_delta": 0,
                "quicksettings_list": ["sd_model_checkpoint"], "emphasis": "Original", "sd_vae": "Automatic",
                "CLIP_stop_at_last_layers": 1, "img2img_fix_steps": False, "return_grid": True}
    assert {k: options.get(k, "<missing>") for k in expected} == expected
    from modules.a1111_options import A1111_DEFAULTS

    assert not set(A1111_DEFAULTS) - set(options)


def test_a_no_effect_key_round_trips_and_an_unknown_key_is_422(own):
    _, client, root = own
    r = client.post("/sdapi/v1/options", json={"send_seed": False, "eta_noise_seed_delta": 31337.0,
                                               "hide_samplers": ["DDIM"]})
    assert r.status_code == 200, r.text
    options = client.get("/sdapi/v1/options").json()
    assert (options["send_seed"], options["eta_noise_seed_delta"], options["hide_samplers"]) == (False, 31337, ["DDIM"])
    assert saved(root)["send_seed"] is False

    before = saved(root)
    r = client.post("/sdapi/v1/options", json={"jpeg_quality": 50, "not_an_option_anywhere": 1})
    assert r.status_code == 422 and locs(r) == ["body.not_an_option_anywhere"], r.text
    r = client.post("/sdapi/v1/options", json={"send_seed": "yes"})
    assert r.status_code == 422 and locs(r) == ["body.send_seed"], r.text
    assert saved(root) == before and client.get("/sdapi/v1/options").json()["jpeg_quality"] == 80


def test_override_settings_accept_a1111_keys(client):
    body = {"prompt": "x", **FAST, "width": 64, "height": 64, "override_settings": {"send_seed": False}}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    assert any("send_seed" in w for w in json.loads(r.json()["info"])["warnings"])


# ------------------------------------------------------------------------------------- item 2
def test_output_folders_set_over_the_api_stay_in_the_data_folder(own, tmp_path):
    ctx, client, root = own
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "outputs").mkdir(exist_ok=True)
    os.symlink(outside, root / "outputs" / "link-out")
    before = saved(root)
    for name, value in [("outdir_samples", "../../etc/x"), ("outdir_txt2img_samples", str(outside)),
                        ("outdir_grids", "link-out/grids"), ("outdir_save", "../../x"), ("temp_dir", "/tmp")]:
        r = client.post("/sdapi/v1/options", json={name: value})
        assert r.status_code == 422, (name, r.text)
        assert locs(r) == [f"body.{name}"] and "outside the data folder" in r.text
    assert saved(root) == before and ctx.settings.get().outdir_samples == ""

    inside = str(root / "outputs" / "mine")
    r = client.post("/sdapi/v1/options", json={"outdir_samples": "mine", "outdir_grids": inside})
    assert r.status_code == 200, r.text
    assert (ctx.settings.get().outdir_samples, ctx.settings.get().outdir_grids) == ("mine", inside)
    client.post("/sdapi/v1/options", json={"outdir_samples": "", "outdir_grids": ""})


def test_a_settings_file_may_point_anywhere(tmp_path):
    from modules.settings import SettingsStore

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"outdir_samples": "/srv/pictures"}), encoding="utf-8")
    assert SettingsStore(path).get().outdir_samples == "/srv/pictures"


# ------------------------------------------------------------------------------------- item 4
@pytest.mark.parametrize("name, reason", [("evil.ckpt", "builtins.exec"), ("empty.safetensors", "empty"),
                                          ("truncated.safetensors", "truncated")])
def test_an_unusable_checkpoint_is_a_4xx_and_changes_nothing(own, name, reason):
    ctx, client, root = own
    before_file, before_title = saved(root), ctx.registry.current_title()
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": name})
    assert r.status_code == 422, r.text
    assert locs(r) == ["body.sd_model_checkpoint"] and reason in r.text and name.split(".")[0] in r.text
    assert saved(root) == before_file
    assert ctx.settings.get().sd_model_checkpoint != name
    assert ctx.registry.current_title() == before_title
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == before_title
    assert not (root / "pwned").exists()


def test_ckpt_flag_at_a_refused_file_logs_the_reason(own, caplog):
    from modules.models.registry import ModelRegistry
    from modules.models.options import ModelOptions

    ctx, _, root = own
    for wanted in ("evil.ckpt", str(root / "models" / "Stable-diffusion" / "evil.ckpt")):
        registry = ModelRegistry(ctx.paths, ModelOptions(default_checkpoint=wanted, device="cpu"))
        with caplog.at_level("WARNING", logger="modules.models.registry"):
            caplog.clear()
            registry.current_title()
            registry.current_title()
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 1 and "builtins.exec" in messages[0] and "is gone" not in messages[0], messages


# ------------------------------------------------------------------------------------- item 12
def test_a_style_that_does_not_exist_is_ignored_with_a_warning(client):
    body = {"prompt": "a red circle", **FAST, "width": 64, "height": 64, "seed": 1, "styles": ["None", "sunny"]}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["styles"] == ["sunny"] and info["prompt"] == "a red circle, sunny day"
    assert any("'None'" in w and "ignored" in w for w in info["warnings"]), info["warnings"]


# ------------------------------------------------------------------------------------- item 13: effect
def test_inpainting_mask_weight_changes_a_9_channel_inpaint(own):
    ctx, client, _ = own
    body = {"init_images": [b64_png(picture())], "mask": b64_png(centre_mask()), "mask_blur": 0,
            "inpainting_fill": 1, "inpaint_full_res": False, "denoising_strength": 1.0, "seed": 4,
            "width": 64, "height": 64, **FAST, "override_settings": {"sd_model_checkpoint": "tiny-inpaint"}}

    def run(weight: float) -> np.ndarray:
        assert client.post("/sdapi/v1/options", json={"inpainting_mask_weight": weight}).status_code == 200
        r = client.post("/sdapi/v1/img2img", json=body)
        assert r.status_code == 200, r.text
        return np.asarray(decode(r.json()["images"][0]).convert("RGB"), dtype=np.int16)

    full, none, full_again = run(1.0), run(0.0), run(1.0)
    assert np.array_equal(full, full_again)
    assert np.abs(full[24:41, 24:41] - none[24:41, 24:41]).max() > 0  # the masked square differs
    r = client.post("/sdapi/v1/options", json={"inpainting_mask_weight": 1.5})
    assert r.status_code == 422 and locs(r) == ["body.inpainting_mask_weight"]
