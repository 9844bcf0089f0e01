"""Prompts from file, SD upscale, loopback and the two outpainting scripts through the real server
and the real engine (the embedded model at 64x64, 2-3 steps), with A1111's positional script_args."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.api.conftest import MODEL_B
from tests.api.helpers import b64_png, decode, picture

BASE = {"prompt": "a red circle on a blue background", "width": 64, "height": 64, "steps": 2, "seed": 7,
        "sampler_name": "Euler"}


def params_of(text: str) -> dict[str, str]:
    from modules.infotext import parse_infotext

    return parse_infotext(text).params


def prompt_of(text: str) -> str:
    from modules.infotext import parse_infotext

    return parse_infotext(text).prompt


def post(client, route: str, body: dict, status: int = 200):
    response = client.post(f"/sdapi/v1/{route}", json=body)
    assert response.status_code == status, response.text
    data = response.json()
    return data, (json.loads(data["info"]) if status == 200 else None)


def img2img_body(image=None, **extra):
    return {**BASE, "init_images": [b64_png(image or picture())], "denoising_strength": 0.5, **extra}


# ---------------------------------------------------------------- prompts from file or textbox


def test_scripts_lists_the_new_scripts(client):
    scripts = client.get("/sdapi/v1/scripts").json()
    assert "prompts from file or textbox" in scripts["txt2img"]
    assert "sd upscale" not in scripts["txt2img"] and "loopback" not in scripts["txt2img"]
    for title in ("prompts from file or textbox", "sd upscale", "loopback", "outpainting mk2",
                  "poor man's outpainting"):
        assert title in scripts["img2img"], title
    infos = {(i["name"], i["is_img2img"]): i for i in client.get("/sdapi/v1/script-info").json()}
    labels = [a["label"] for a in infos[("prompts from file or textbox", False)]["args"]]
    assert labels == ["Iterate seed every line", "Use same random seed for all lines", "Insert prompts at the",
                      "List of prompt inputs"]
    assert [a["label"] for a in infos[("sd upscale", True)]["args"]] == ["", "Tile overlap", "Upscaler",
                                                                          "Scale Factor"]
    assert "Lanczos" in infos[("sd upscale", True)]["args"][2]["choices"]
    assert [a["label"] for a in infos[("loopback", True)]["args"]][:3] == [
        "Loops", "Final denoising strength", "Denoising strength curve"]


def test_prompts_from_file_lines_and_per_line_options(client):
    text = "\n".join([
        "a green square",
        "",
        '--prompt "a yellow star" --negative_prompt blurry --steps 3 --seed 11 --cfg_scale 5 '
        '--sampler_name "euler a" --width 64 --height 96',
        "--prompt a blue moon --n_iter 2 --batch_size 1 --sd_model " + MODEL_B,
    ])
    data, info = post(client, "txt2img", {**BASE, "prompt": "", "script_name": "Prompts from file or textbox",
                                          "script_args": [False, False, "start", text]})
    texts = info["infotexts"]
    assert len(data["images"]) == 4 and info["index_of_first_image"] == 0
    assert [prompt_of(t) for t in texts] == ["a green square", "a yellow star", "a blue moon", "a blue moon"]
    first, star, moon = params_of(texts[0]), params_of(texts[1]), params_of(texts[2])
    assert (first["Steps"], first["Seed"], first["Sampler"], first["Size"]) == ("2", "7", "Euler", "64x64")
    assert (star["Steps"], star["Seed"], star["CFG scale"], star["Sampler"], star["Size"]) == (
        "3", "11", "5", "Euler a", "64x96")
    assert "Negative prompt: blurry" in texts[1]
    assert decode(data["images"][1]).size == (64, 96)
    assert moon["Model"] == MODEL_B and params_of(texts[0])["Model"] != MODEL_B
    assert [params_of(t)["Seed"] for t in texts[2:]] == ["7", "8"]  # n_iter 2: the engine's seed + 1


def test_prompts_from_file_positions_and_seeds(client):
    body = {**BASE, "prompt": "on blue", "script_name": "prompts from file or textbox"}
    _, info = post(client, "txt2img", {**body, "script_args": [True, False, "end", "a cat\na dog"]})
    assert [prompt_of(t) for t in info["infotexts"]] == ["on blue a cat", "on blue a dog"]
    assert [params_of(t)["Seed"] for t in info["infotexts"]] == ["7", "8"]  # iterate seed every line
    _, info = post(client, "txt2img", {**body, "seed": -1, "script_args": [False, True, "start", "a cat\na dog"]})
    assert [prompt_of(t) for t in info["infotexts"]] == ["a cat on blue", "a dog on blue"]
    seeds = [params_of(t)["Seed"] for t in info["infotexts"]]
    assert seeds[0] == seeds[1]  # one random seed for all lines
    _, info = post(client, "txt2img", {**body, "script_args": [False, False, "start", "--prompt a cat --styles sunny"]})
    assert prompt_of(info["infotexts"][0]) == "a cat on blue, sunny day" and info["styles"] == ["sunny"]
    assert "Negative prompt: blurry" in info["infotexts"][0]
    # A1111 before 1.6: no prompt_position; the textbox is the third value
    _, info = post(client, "txt2img", {**body, "script_args": [False, False, "a cat"]})
    assert [prompt_of(t) for t in info["infotexts"]] == ["a cat on blue"]


@pytest.mark.parametrize("line,words", [
    ("--prompt a cat --colour red", ["line 2", "--colour", "unknown option"]),
    ("--prompt a cat --steps ten", ["line 2", "--steps", "'ten'"]),
    ("--prompt a cat --steps 900", ["line 2", "--steps", "150"]),
    ("--prompt a cat --sampler_name Nope", ["line 2", "--sampler_name", "Nope"]),
    ('--prompt "a cat', ["line 2", "quotation"]),
    ("--prompt a cat --sd_model no-such-model", ["line 2", "--sd_model", "no-such-model"]),
    ("--prompt a cat --styles nope", ["line 2", "--styles", "'nope'", "sunny"]),
])
def test_prompts_from_file_bad_lines_are_refused_before_running(client, ctx, line, words):
    jobs = len(ctx.queue._jobs)
    data, _ = post(client, "txt2img", {**BASE, "script_name": "Prompts from file or textbox",
                                       "script_args": [False, False, "start", f"a dog\n{line}"]}, status=422)
    detail = data["detail"][0]
    assert detail["loc"] == ["body", "script_args", 3]
    for word in words:
        assert word in detail["msg"], detail["msg"]
    assert len(ctx.queue._jobs) == jobs


def test_prompts_from_file_on_img2img(client):
    _, info = post(client, "img2img", img2img_body(script_name="Prompts from file or textbox",
                                                   script_args=[False, False, "start", "a cat\na dog"]))
    assert [prompt_of(t) for t in info["infotexts"]] == [f"a cat {BASE['prompt']}", f"a dog {BASE['prompt']}"]
    assert params_of(info["infotexts"][0])["Denoising strength"] == "0.5"


# ---------------------------------------------------------------- SD upscale


def a1111_simple_img2img_request(image) -> dict:
    """A1111's test/test_img2img.py `simple_img2img_request`, field for field."""
    return {
        "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0.75, "eta": 0, "height": 64,
        "include_init_images": False, "init_images": [b64_png(image)], "inpaint_full_res": False,
        "inpaint_full_res_padding": 0, "inpainting_fill": 0, "inpainting_mask_invert": False, "mask": None,
        "mask_blur": 4, "n_iter": 1, "negative_prompt": "", "override_settings": {}, "prompt": "example prompt",
        "resize_mode": 0, "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0,
        "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 3,
        "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False, "width": 64,
    }


def test_a1111_sd_upscale_api_test_payload(client):
    # A1111's test_img2img_sd_upscale_performed, as it is (with a 96 px picture: 2x = 4x4 tiles)
    body = a1111_simple_img2img_request(picture(96))
    body["script_name"] = "sd upscale"
    body["script_args"] = ["", 8, "Lanczos", 2.0]
    data, info = post(client, "img2img", body)
    assert len(data["images"]) == 1
    assert decode(data["images"][0]).size == (192, 192)
    fields = params_of(info["infotexts"][0])
    assert fields["SD upscale overlap"] == "8" and fields["SD upscale upscaler"] == "Lanczos"
    assert fields["Size"] == "64x64" and fields["Steps"] == "3"  # the tile size, as A1111 writes it


@pytest.mark.parametrize("size,args,expected", [
    (100, ["", 16, "lanczos", 1.5], (144, 144)),  # floor(100 x 1.5 / 8) x 8, as A1111's upscalers
    (80, ["", 0, 2, 2], (160, 160)),  # an index into the upscaler list (A1111's radio type="index"): Nearest
    (100, ["", 32, "None", 3], (100, 100)),  # "None" does not upscale (A1111)
])
def test_sd_upscale_output_size(client, size, args, expected):
    data, info = post(client, "img2img", img2img_body(picture(size), script_name="SD upscale", script_args=args))
    assert [info["width"], info["height"]] == [64, 64]  # the tile size (A1111's p.width / p.height)
    assert decode(data["images"][0]).size == expected


def test_sd_upscale_batch_count_and_blend(client):
    init = picture(64)
    data, info = post(client, "img2img", img2img_body(init, n_iter=2, denoising_strength=0.0,
                                                      script_name="SD upscale", script_args=["", 16, "Nearest", 2]))
    assert [params_of(t)["Seed"] for t in info["infotexts"]] == ["7", "8"]
    # strength 0 returns each tile as it came in: the blend of the overlaps gives the upscaled picture back
    out = np.asarray(decode(data["images"][0]).convert("RGB"), dtype=np.int16)
    expected = np.asarray(init.resize((128, 128), resample=0), dtype=np.int16)
    assert np.abs(out - expected).max() <= 2


@pytest.mark.parametrize("args,loc,words", [
    (["", 64, "Lanczos", 2], 1, ["overlap", "64", "smaller than the tile"]),
    (["", 8, "Bicubic-9000", 2], 2, ["unknown upscaler", "'Bicubic-9000'", "Lanczos"]),
    (["", 8, 99, 2], 2, ["out of range"]),
    (["", 8, "Lanczos", 20], 3, ["scale_factor"]),
])
def test_sd_upscale_refusals(client, args, loc, words):
    data, _ = post(client, "img2img", img2img_body(script_name="SD upscale", script_args=args), status=422)
    detail = data["detail"][0]
    assert detail["loc"] == ["body", "script_args", loc]
    for word in words:
        assert word in detail["msg"], detail["msg"]


# ---------------------------------------------------------------- loopback


@pytest.mark.parametrize("curve,expected", [
    ("Linear", [0.5, 0.35, 0.2]),
    ("Aggressive", [0.5, 0.5 - 0.3 * np.sin(np.pi / 4), 0.2]),
    ("Lazy", [0.5, 0.5 - 0.3 * (1 - np.cos(np.pi / 4)), 0.2]),
])
def test_loopback_runs_each_loop_with_the_curves_strength(client, curve, expected):
    data, info = post(client, "img2img", img2img_body(script_name="Loopback", script_args=[3, 0.2, curve, "None"]))
    assert len(data["images"]) == 1 + 3 and info["index_of_first_image"] == 1
    assert decode(data["images"][0]).size == (3 * 64, 64)  # one row: every loop
    loops = [params_of(t) for t in info["infotexts"][1:]]
    assert [float(p["Denoising strength"]) for p in loops] == pytest.approx(expected, abs=1e-3)
    assert [p["Seed"] for p in loops] == ["7", "8", "9"]
    assert all(p["Final denoising strength"] == "0.2" and p["Denoising curve"] == curve for p in loops)


def test_loopback_feeds_each_output_into_the_next_loop(client):
    # loop 2 runs at strength 0 (the final one), which returns its input unchanged: loop 1's output
    data, _ = post(client, "img2img", img2img_body(script_name="loopback", script_args=[2, 0.0, "Linear"]))
    first, second = (np.asarray(decode(b).convert("RGB"), dtype=np.int16) for b in data["images"][1:])
    source = np.asarray(picture(), dtype=np.int16)
    assert np.abs(first - second).max() <= 2 and np.abs(first - source).mean() > 5


def test_loopback_batch_count_returns_each_runs_last_image(client):
    data, info = post(client, "img2img", img2img_body(n_iter=2, script_name="Loopback",
                                                      script_args=[2, 0.3, "Linear", "None"]))
    assert len(data["images"]) == 1 + 2 and info["index_of_first_image"] == 1
    assert [params_of(t)["Seed"] for t in info["infotexts"][1:]] == ["8", "10"]  # seeds 7, 8 then 9, 10


def test_loopback_refuses_interrogation(client):
    data, _ = post(client, "img2img", img2img_body(script_name="Loopback", script_args=[2, 0.3, "Linear", "CLIP"]),
                   status=422)
    assert data["detail"][0]["loc"] == ["body", "script_args", 3] and "interrogation" in data["detail"][0]["msg"]


# ---------------------------------------------------------------- outpainting


def assert_keeps_original(result, init, left, up):
    out = np.asarray(result.convert("RGB"), dtype=np.int16)
    src = np.asarray(init.convert("RGB"), dtype=np.int16)
    region = out[up:up + init.height, left:left + init.width]
    assert np.array_equal(region, src)  # exactly the original pixels
    new = np.ones(out.shape[:2], bool)
    new[up:up + init.height, left:left + init.width] = False
    assert out[new].std() > 1  # the new area was painted (not left flat black)


@pytest.mark.parametrize("script,args,size,offset", [
    ("Outpainting mk2", ["", 32, 4, ["left", "up"], 1.0, 0.05], (96, 96), (32, 32)),
    ("Outpainting mk2", ["", 16, 8, ["left", "right", "up", "down"], 0.5, 0.2], (96, 96), (16, 16)),
    ("Outpainting mk2", ["", 24, 2, ["down"], 1.0, 0.05], (64, 88), (0, 0)),
    ("Poor man's outpainting", [16, 4, "fill", ["left", "right", "up", "down"]], (96, 96), (16, 16)),
    ("Poor man's outpainting", [24, 2, 1, ["right"]], (88, 64), (0, 0)),  # 1 = "original" (A1111's index)
    ("poor man's outpainting", [32, 4, "latent noise", ["up"]], (64, 96), (0, 32)),
])
def test_outpainting_extends_the_canvas_and_keeps_the_original(client, script, args, size, offset):
    init = picture(64)
    data, info = post(client, "img2img", img2img_body(init, denoising_strength=0.8, script_name=script,
                                                      script_args=args))
    assert len(data["images"]) == 1
    result = decode(data["images"][0])
    assert result.size == size
    assert_keeps_original(result, init, *offset)
    assert params_of(info["infotexts"][0])["Size"] == f"{size[0]}x{size[1]}"


def test_outpainting_mk2_batch_and_odd_sizes(client):
    init = picture(64).resize((60, 60))
    data, info = post(client, "img2img", img2img_body(init, batch_size=2, script_name="Outpainting mk2",
                                                      script_args=["", 16, 4, ["left"], 1.0, 0.05]))
    assert info["index_of_first_image"] == 1 and len(data["images"]) == 3  # grid, then both pictures
    pictures = [decode(b) for b in data["images"][1:]]
    # 60 + 16 rounds up to 80 (the rounding goes to the growing side); 60 high rounds to 64 (below)
    assert all(p.size == (80, 64) for p in pictures)
    for p in pictures:
        assert_keeps_original(p, init, 20, 0)
    assert [params_of(t)["Seed"] for t in info["infotexts"][1:]] == ["7", "8"]


@pytest.mark.parametrize("script,args,loc,words", [
    ("Outpainting mk2", ["", 32, 4, [], 1.0, 0.05], 3, ["at least one direction"]),
    ("Outpainting mk2", ["", 32, 4, ["sideways"], 1.0, 0.05], 3, ["direction"]),
    ("Poor man's outpainting", [64, 4, "fill", ["left"]], 0, ["smaller than the tile"]),
    ("Poor man's outpainting", [16, 4, "glitter", ["left"]], 2, ["glitter"]),
])
def test_outpainting_refusals(client, script, args, loc, words):
    data, _ = post(client, "img2img", img2img_body(script_name=script, script_args=args), status=422)
    detail = data["detail"][0]
    assert detail["loc"][:3] == ["body", "script_args", loc], detail
    for word in words:
        assert word in detail["msg"], detail["msg"]


# ---------------------------------------------------------------- progress and interrupt (one queue slot)


def script_request(ctx, title: str, args: list, **fields):
    from modules.generation.request import GenerationRequest, Mode, ScriptCall

    script = ctx.extensions.selectable.find(title)
    values = {"prompt": "a circle", "width": 64, "height": 64, "steps": 2, "seed": 3, "save_images": False,
              "mode": Mode.IMG2IMG, "init_images": (picture(),), "denoising_strength": 0.5, **fields}
    return GenerationRequest(**values, script=ScriptCall(name=script.name, args=script.args_from_api(args)))


def test_sd_upscale_progress_counts_every_tile_batch(ctx):
    from tests.api.helpers import wait_for

    # 64 px x 3 = 192: 4 x 4 tiles of 64 (overlap 8), 2 per sub-job -> 8 batches; batch count 2 -> 16
    job = ctx.queue.submit(script_request(ctx, "SD upscale", ["", 8, "Lanczos", 3], batch_size=2, batch_count=2,
                                          steps=1))
    seen = set()
    wait_for(lambda: seen.add(job.control.snapshot().batch_index) or job.future.done(), timeout=300, every=0.005)
    result = job.result()
    snap = job.control.snapshot()
    assert snap.batch_count == 16 and max(seen) == 15 and len(seen) > 2
    assert [im.size for im in result.images] == [(192, 192)] * 2 and result.seeds == [3, 4]


def test_loopback_interrupt_keeps_the_loops_done(ctx):
    from tests.api.helpers import wait_for

    job = ctx.queue.submit(script_request(ctx, "Loopback", [6, 0.3, "Linear"], steps=3))
    wait_for(lambda: job.control.snapshot().batch_index >= 1 or job.future.done(), timeout=300, every=0.005)
    ctx.queue.interrupt(job.id)
    result = job.result()
    assert result.interrupted
    done = len(result.images) - result.grids
    assert 1 <= done < 6 and len(result.infotexts) == len(result.images)
