"""Extensions end to end: a data folder with an `extensions/` folder, the app built as launch.py
builds it (create_context: discover, install.py, import, one ExtensionSet for the engine), served
as --nowebui serves it (build_served_app: the API, then on_app_started), and jobs through the real
engine on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from modules.extensions.a1111_registry import COMPAT
from modules.infotext import parse_infotext, read_infotext
from tests.api.conftest import Server, make_args
from tests.api.helpers import b64_png, decode, picture
from tests.extension_factory import commit_all, make_extension

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "refactor_reference"
FAST = {"prompt": "a red circle", "steps": 3, "sampler_name": "Euler a", "seed": 4242}

SAMPLE = '''
import gradio as gr
from PIL import ImageOps
from modules import scripts, script_callbacks, shared


class SampleInverter(scripts.Script):
    def title(self):
        return "Sample Inverter"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Checkbox(label="Invert", value=False), gr.Textbox(label="Prompt suffix", value="")]

    def process(self, p, enabled, suffix):
        if not enabled:
            return
        if suffix:
            p.prompt = p.prompt + ", " + suffix
            p.all_prompts = [x + ", " + suffix for x in p.all_prompts]
            p.extra_generation_params["Sample suffix"] = suffix
        p.extra_generation_params["Sample inverted"] = "yes"

    def postprocess_image(self, p, pp, enabled, suffix):
        if enabled:
            pp.image = ImageOps.invert(pp.image.convert("RGB"))


class SamplePicker(scripts.Script):
    def title(self):
        return "Sample Picker"

    def show(self, is_img2img):
        return not is_img2img


def on_started(demo, app):
    @app.get("/sample/started")
    def started():
        return {"demo_is_none": demo is None, "samples_format": shared.opts.samples_format,
                "nowebui": shared.cmd_opts.nowebui}


def on_saved(params):
    with open(params.filename + ".saved.txt", "w", encoding="utf-8") as f:
        f.write(params.pnginfo["parameters"] + "\\n--\\n" + params.p.prompt)


script_callbacks.on_app_started(on_started)
script_callbacks.on_image_saved(on_saved)
'''

INSTALL_OK = '''
from pathlib import Path
print("sample install ran")
Path("installed.txt").write_text("yes")
'''

BROKEN_IMPORT = '''
from modules import scripts
from modules import sd_models
'''

BROKEN_HOOK = '''
import gradio as gr
from modules import scripts


class BrokenHook(scripts.Script):
    def title(self):
        return "Broken Hook"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Checkbox(label="Explode", value=False)]

    def postprocess_image(self, p, pp, explode):
        if explode:
            raise RuntimeError("boom in postprocess_image")
'''

# This app's typed API, defined in an extension's scripts file (found and instantiated once).
TYPED = '''
from contextlib import contextmanager

import torch
from pydantic import BaseModel, Field

from modules.extensions.hooks import JobExtension


class MidShiftArgs(BaseModel):
    enabled: bool = True
    strength: float = Field(0.0, ge=-5.0, le=5.0)


class MidShift(JobExtension):
    """Adds `strength` to the UNet's mid-block output at every step (ControlNet's seam)."""

    name = "mid-shift"
    title = "Mid Shift"
    Args = MidShiftArgs

    def process(self, job, args):
        job.extra_params["Mid shift"] = args.strength

    def unet_step(self, job, batch, step, args):
        # diffusers adds the mid residual only when down-block residuals come with it (zeros here)
        config = job.model.unet.config
        n, _, h, w = step.sample.shape
        like = dict(dtype=step.sample.dtype, device=step.sample.device)
        down = [torch.zeros(n, config.block_out_channels[0], h, w, **like)]
        for i, channels in enumerate(config.block_out_channels):
            down += [torch.zeros(n, channels, h, w, **like) for _ in range(config.layers_per_block)]
            if i < len(config.block_out_channels) - 1:
                h, w = h // 2, w // 2
                down.append(torch.zeros(n, channels, h, w, **like))
        step.unet_kwargs["down_block_additional_residuals"] = tuple(down)
        step.unet_kwargs["mid_block_additional_residual"] = torch.full(
            (n, config.block_out_channels[-1], h, w), args.strength, **like)

    def args_from_infotext(self, params):
        if "Mid shift" not in params:
            return None
        return MidShiftArgs(strength=float(params["Mid shift"]))


class PatchArgs(BaseModel):
    fail_in: str = ""  # "unet_step": fail while the patch is in place


class ConvInPatch(JobExtension):
    """Shifts the UNet's conv_in bias for each batch; the patch must be undone even when the job fails."""

    name = "conv-in-patch"
    Args = PatchArgs

    def visible(self, is_img2img):
        return not is_img2img

    def process_batch(self, job, batch, args):
        bias = job.model.unet.conv_in.bias

        @contextmanager
        def patched():
            saved = bias.detach().clone()
            with torch.inference_mode():
                bias.add_(0.5)
            try:
                yield
            finally:
                with torch.inference_mode():
                    bias.copy_(saved)

        return patched()

    def unet_step(self, job, batch, step, args):
        if args.fail_in == "unet_step":
            raise RuntimeError("boom in unet_step")
'''


@pytest.fixture(scope="module")
def ext_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ext-data")
    user = root / "extensions"
    sample = make_extension(user, "sample-inverter", {"scripts/inverter.py": SAMPLE, "install.py": INSTALL_OK})
    commit_all(sample)
    make_extension(user, "broken-import", {"scripts/bad.py": BROKEN_IMPORT})
    make_extension(user, "broken-install", {"install.py": "import sys\nprint('no wheel here')\nsys.exit(3)\n",
                                            "scripts/fine.py": "from modules import scripts\n"})
    make_extension(user, "broken-hook", {"scripts/hook.py": BROKEN_HOOK})
    make_extension(user, "typed-ext", {"scripts/typed.py": TYPED})
    return root


@pytest.fixture(scope="module")
def ext_ctx(ext_data):
    from modules.app_factory import create_context

    COMPAT.clear()  # the compat layer's callbacks are process-wide: only these extensions' count
    context = create_context(make_args(ext_data), builtin_extensions_dir=ext_data / "no-builtin")
    yield context
    context.queue.shutdown()
    COMPAT.clear()


@pytest.fixture(scope="module")
def ext_client(ext_ctx):
    from modules.api.server import build_served_app

    with Server(build_served_app(ext_ctx)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        yield c


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def txt2img(client, status: int = 200, **fields):
    response = client.post("/sdapi/v1/txt2img", json={**FAST, **fields})
    assert response.status_code == status, response.text
    body = response.json()
    return (body, json.loads(body["info"])) if status == 200 else (body, None)


def pixels(client, **fields) -> list[np.ndarray]:
    body, _ = txt2img(client, **fields)
    return [px(decode(b)) for b in body["images"]]


def saved_pngs(ctx) -> set[Path]:
    return set(ctx.paths.outputs_dir.rglob("*.png"))


# ---- start-up and the lists


def test_every_extension_found_is_listed_with_its_error(ext_client, ext_data):
    items = {i["name"]: i for i in ext_client.get("/sdapi/v1/extensions").json()}
    assert sorted(items) == ["broken-hook", "broken-import", "broken-install", "sample-inverter", "typed-ext"]
    sample = items["sample-inverter"]
    assert sample["enabled"] and sample["error"] is None and sample["branch"] == "main"
    assert len(sample["commit_hash"]) == 40 and sample["version"] == sample["commit_hash"][:8]
    assert sample["commit_date"].isdigit()
    assert "needs modules.sd_models, which this app does not provide" in items["broken-import"]["error"]
    assert "install.py failed with exit code 3" in items["broken-install"]["error"]
    assert items["typed-ext"]["error"] is None and items["typed-ext"]["commit_hash"] == ""
    # install.py ran in its folder before the scripts loaded
    assert (ext_data / "extensions" / "sample-inverter" / "installed.txt").read_text() == "yes"


def test_scripts_and_script_info_list_what_loaded(ext_client):
    scripts = ext_client.get("/sdapi/v1/scripts").json()
    assert scripts["txt2img"] == ["sample picker", "broken hook", "sample inverter", "mid shift", "conv-in-patch"]
    assert scripts["img2img"] == ["broken hook", "sample inverter", "mid shift"]  # picker and patch: txt2img only

    infos = {(i["name"], i["is_img2img"]): i for i in ext_client.get("/sdapi/v1/script-info").json()}
    inverter = infos[("sample inverter", False)]
    assert inverter["is_alwayson"] and [(a["label"], a["value"]) for a in inverter["args"]] == [
        ("Invert", False), ("Prompt suffix", "")]
    assert ("sample inverter", True) in infos and not infos[("sample picker", False)]["is_alwayson"]
    shift = infos[("mid shift", False)]
    assert [(a["label"], a["value"], a["minimum"], a["maximum"]) for a in shift["args"]] == [
        ("enabled", True, None, None), ("strength", 0.0, -5.0, 5.0)]


def test_on_app_started_ran_with_the_served_app(ext_client):
    body = ext_client.get("/sample/started").json()
    assert body == {"demo_is_none": True, "samples_format": "png", "nowebui": True}


# ---- jobs


def test_sample_changes_the_job_through_process_and_postprocess_image(ext_client, ext_ctx):
    before = saved_pngs(ext_ctx)
    body, info = txt2img(ext_client, save_images=True,
                         alwayson_scripts={"SAMPLE inverter": {"args": [True, "blue"]}})  # any letter case
    plain = pixels(ext_client, prompt="a red circle, blue")  # what process turned the prompt into
    assert np.array_equal(px(decode(body["images"][0])), 255 - plain[0])

    assert info["all_prompts"] == ["a red circle, blue"]
    text = info["infotexts"][0]
    assert parse_infotext(text).params["Sample inverted"] == "yes"
    assert parse_infotext(text).params["Sample suffix"] == "blue"
    assert info["extra_generation_params"]["Sample suffix"] == "blue"
    assert read_infotext(decode(body["images"][0])) == text

    new = saved_pngs(ext_ctx) - before
    assert len(new) == 1
    path = new.pop()
    with Image.open(path) as saved:
        assert read_infotext(saved) == text
        assert np.array_equal(px(saved), 255 - plain[0])
    # on_image_saved got the saved file's path, its infotext and the job's p
    assert Path(f"{path}.saved.txt").read_text(encoding="utf-8") == f"{text}\n--\na red circle, blue"


def test_idle_extensions_give_the_pixels_of_an_app_without_extensions(ext_client, client):
    """Always-on scripts run on every job with their defaults (off): nothing may change."""
    assert np.array_equal(pixels(ext_client, batch_size=2)[1], pixels(client, batch_size=2)[1])


@pytest.mark.parametrize("case,fields", [
    ("euler_a_batch2", dict(prompt="a red circle", sampler_name="Euler a", steps=4, seed=1234, batch_size=2)),
    ("dpmpp2m_karras_neg", dict(prompt="a blue square on a white background", negative_prompt="red",
                                sampler_name="DPM++ 2M", scheduler="Karras", steps=5, seed=99, cfg_scale=5.0)),
])
def test_same_seed_same_pixels_as_the_engine_before_the_refactor(ext_client, case, fields):
    """The references were made by the engine of commit fe2c151 (before the phases and hooks;
    tests/data/refactor_reference/generate.py) on the embedded model, CPU, one thread. A change
    to noise, schedule, conditioning, CFG or decoding moves pixels by tens of levels; the bound of
    2 levels only allows for float rounding on another CPU."""
    got = pixels(ext_client, **fields)
    for i, image in enumerate(got):
        with Image.open(REFERENCE_DIR / f"{case}_{i}.png") as ref:
            diff = np.abs(image - px(ref))
        assert diff.max() <= 2, f"{case} image {i}: max difference {diff.max()}"


def test_a_failing_a1111_hook_ends_only_its_own_job(ext_client, ext_ctx):
    reference = pixels(ext_client)
    before = saved_pngs(ext_ctx)
    body, _ = txt2img(ext_client, 500, save_images=True, alwayson_scripts={"broken hook": {"args": [True]}})
    assert body["extension"] == "Broken Hook" and body["hook"] == "postprocess_image"
    assert "extension 'Broken Hook' failed in postprocess_image: RuntimeError: boom" in body["detail"]
    assert saved_pngs(ext_ctx) == before  # nothing written for the failed job
    assert np.array_equal(pixels(ext_client)[0], reference[0])


def test_a_patch_is_undone_when_its_job_fails(ext_client):
    reference = pixels(ext_client)
    assert not np.array_equal(pixels(ext_client, alwayson_scripts={"conv-in-patch": {}})[0], reference[0])
    body, _ = txt2img(ext_client, 500, alwayson_scripts={"conv-in-patch": {"fail_in": "unet_step"}})
    assert body["extension"] == "conv-in-patch" and body["hook"] == "unet_step"
    assert np.array_equal(pixels(ext_client)[0], reference[0])  # the model is as it was


def test_unet_step_weight_zero_equals_off_and_infotext_restores_its_args(ext_client):
    reference = pixels(ext_client)
    assert np.array_equal(pixels(ext_client, alwayson_scripts={"Mid Shift": {"strength": 0}})[0], reference[0])
    body, info = txt2img(ext_client, alwayson_scripts={"mid shift": {"args": [True, 1.5]}})
    shifted = px(decode(body["images"][0]))
    assert not np.array_equal(shifted, reference[0])
    assert parse_infotext(info["infotexts"][0]).params["Mid shift"] == "1.5"

    # the infotext alone reproduces the job, the extension's Args included...
    again = client_post_infotext(ext_client, info["infotexts"][0])
    assert np.array_equal(again, shifted)
    # ...unless the request sends that extension itself
    assert np.array_equal(client_post_infotext(ext_client, info["infotexts"][0],
                                               alwayson_scripts={"mid-shift": {"strength": 0}}), reference[0])


def client_post_infotext(client, text: str, **fields) -> np.ndarray:
    response = client.post("/sdapi/v1/txt2img", json={"infotext": text, **fields})
    assert response.status_code == 200, response.text
    return px(decode(response.json()["images"][0]))


# ---- bad requests


@pytest.mark.parametrize("scripts,loc,text", [
    ({"nope": {}}, None, "alwayson_scripts.nope: script 'nope' not found"),
    ({"mid shift": {"strength": 99}}, ["body", "alwayson_scripts", "mid shift", "strength"], "less than or equal to 5"),
    ({"Mid Shift": {"args": [True, "x"]}}, ["body", "alwayson_scripts", "Mid Shift", "args", 1], "valid number"),
    ({"sample inverter": {"args": "on"}}, ["body", "alwayson_scripts", "sample inverter", "args"], "valid list"),
    ({"sample picker": {}}, None, "script 'sample picker' not found"),  # selectable, not always-on
    ({"mid shift": {}, "MID SHIFT": {}}, ["body", "alwayson_scripts", "MID SHIFT"], "sent twice"),
])
def test_bad_alwayson_scripts_are_422_naming_the_field(ext_client, scripts, loc, text):
    body, _ = txt2img(ext_client, 422, alwayson_scripts=scripts)
    assert text in json.dumps(body)
    if loc is not None:
        assert body["detail"][0]["loc"] == loc
    assert ext_client.get("/sdapi/v1/extensions").status_code == 200  # still serving


def test_a_txt2img_only_extension_is_refused_on_img2img(ext_client):
    response = ext_client.post("/sdapi/v1/img2img", json={
        "init_images": [b64_png(picture())], "steps": 2, "alwayson_scripts": {"conv-in-patch": {}}})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "alwayson_scripts", "conv-in-patch"]
    assert "not available on the img2img tab" in response.text


def test_script_name_of_a_selectable_script_says_it_does_not_run_yet(ext_client):
    body, _ = txt2img(ext_client, 422, script_name="Sample Picker")
    assert body["detail"][0]["loc"] == ["body", "script_name"] and "not available yet" in body["errors"]
    body, _ = txt2img(ext_client, 422, script_name="nope")
    assert "script 'nope' not found; available scripts: Sample Picker" in body["detail"]
