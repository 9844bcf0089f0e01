"""Selectable scripts through the real server and the real engine: X/Y/Z plot and prompt matrix with
A1111's positional script_args, /scripts and /script-info, refusals before anything runs, the
checkpoint axis loading each model once, progress over every cell, interrupt with a partial grid."""

from __future__ import annotations

import json
import logging

import pytest

from modules.generation.request import GenerationRequest
from tests.api.conftest import MODEL_A, MODEL_B
from tests.api.helpers import decode, wait_for

BASE = {"prompt": "a red circle on a blue background", "width": 64, "height": 64, "steps": 2, "seed": 7,
        "sampler_name": "Euler"}


def ix(label: str) -> int:
    """The index A1111 1.10's clients send for a txt2img axis type (its list without img2img-only types)."""
    from tests.test_selectable_scripts import axis_labels

    return axis_labels(False).index(label)


NOTHING, SEED, STEPS, CFG, PROMPT_SR, SAMPLER, CHECKPOINT, SIZE = (
    ix(label) for label in ("Nothing", "Seed", "Steps", "CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name",
                            "Size"))


def xyz_args(x_type, x_values, y_type=NOTHING, y_values="", z_type=NOTHING, z_values="", *, legend=True,
             lone=True, sub_grids=False, no_fixed_seeds=False, margin=0):
    """A1111 1.10's positional layout."""
    return [x_type, x_values, [], y_type, y_values, [], z_type, z_values, [], legend, lone, sub_grids,
            no_fixed_seeds, False, False, False, margin, False]


def run_xyz(client, args, **body):
    response = client.post("/sdapi/v1/txt2img", json={**BASE, **body, "script_name": "X/Y/Z plot",
                                                       "script_args": args})
    assert response.status_code == 200, response.text
    data = response.json()
    return data, json.loads(data["info"])


def params_of(text: str) -> dict[str, str]:
    from modules.infotext import parse_infotext

    return parse_infotext(text).params


def test_scripts_and_script_info_list_them(client):
    scripts = client.get("/sdapi/v1/scripts").json()
    assert scripts["txt2img"][:2] == ["x/y/z plot", "prompt matrix"]
    assert "x/y/z plot" in scripts["img2img"]
    infos = {(i["name"], i["is_img2img"]): i for i in client.get("/sdapi/v1/script-info").json()}
    xyz = infos[("x/y/z plot", False)]
    assert xyz["is_alwayson"] is False
    labels = [a["label"] for a in xyz["args"]]
    assert labels[:3] == ["X type", "X values", "X values"] and labels[16] == "Grid margins (px)"
    assert len(labels) == 18
    assert xyz["args"][0]["choices"][:5] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps"]
    assert xyz["args"][0]["choices"][STEPS] == "Steps" and xyz["args"][0]["choices"][CHECKPOINT] == "Checkpoint name"
    assert xyz["args"][16]["maximum"] == 500 and xyz["args"][16]["step"] == 2
    # img2img's list leaves out the txt2img-only types (A1111's indexes shift)
    assert "Hires steps" not in infos[("x/y/z plot", True)]["args"][0]["choices"]
    matrix = infos[("prompt matrix", False)]
    assert [a["label"] for a in matrix["args"]][2] == "Select prompt"
    assert matrix["args"][2]["choices"] == ["positive", "negative"]


def test_xyz_steps_by_cfg_grid_labels_and_infotexts(client):
    data, info = run_xyz(client, xyz_args(STEPS, "1-2", CFG, "3, 7.5"))
    images = [decode(b) for b in data["images"]]
    assert len(images) == 5 and info["index_of_first_image"] == 1
    grid, cells = images[0], images[1:]
    assert all(c.size == (64, 64) for c in cells)
    # 2 columns x 2 rows of 64 px plus the label margins on top and left
    assert grid.width > 128 and grid.height > 128 and grid.width - 128 == 48 and grid.height > 128
    cell_params = [params_of(t) for t in info["infotexts"][1:]]
    assert [(p["Steps"], p["CFG scale"]) for p in cell_params] == [("1", "3"), ("2", "3"), ("1", "7.5"), ("2", "7.5")]
    assert all(p["Seed"] == "7" for p in cell_params)
    grid_params = params_of(info["infotexts"][0])
    assert grid_params["Script"] == "X/Y/Z plot" and grid_params["X Type"] == "Steps"
    assert grid_params["X Values"] == "1-2" and grid_params["Y Type"] == "CFG Scale"
    # the labels are drawn: the top band holds dark text pixels above each column, the corner is white
    top = grid.crop((48, 0, grid.width, 20)).convert("L")
    assert min(top.getdata()) < 100
    assert grid.getpixel((2, 2)) == (255, 255, 255)


def test_xyz_without_sub_images_returns_the_grid_only_and_legend_off_has_no_border(client):
    data, info = run_xyz(client, xyz_args(SEED, "1, 2, 3", legend=False, lone=False))
    assert len(data["images"]) == 1
    grid = decode(data["images"][0])
    assert grid.size == (192, 64)  # 3 cells, no label border
    assert params_of(info["infotexts"][0])["X Values"] == "1, 2, 3"


@pytest.mark.parametrize("axis,values,key,expected", [
    (SEED, "11, 12", "Seed", ["11", "12"]),
    ("Var. seed", "5, 6", "Variation seed", ["5", "6"]),
    ("Var. strength", "0.25, 0.5", "Variation seed strength", ["0.25", "0.5"]),
    ("Sampler", "Euler a, DDIM", "Sampler", ["Euler a", "DDIM"]),
    ("Schedule type", "Karras, Exponential", "Schedule type", ["Karras", "Exponential"]),
    ("Clip skip", "1, 2", "Clip skip", [None, "2"]),  # 1 is not written, as A1111
    ("Size", "64x64, 64x96", "Size", ["64x64", "64x96"]),
    ("CFG Scale", "2.5, 4", "CFG scale", ["2.5", "4"]),
    ("Steps", "1-3", "Steps", ["1", "2", "3"]),
    ("Sigma Churn", "0, 0.5", None, None),
    ("Prompt S/R", "red, green", None, None),
    ("Prompt order", "red, blue", None, None),
])
def test_each_axis_type_changes_its_parameter(client, axis, values, key, expected):
    axis = ix(axis) if isinstance(axis, str) else axis
    extra = {"subseed_strength": 0.5} if axis == ix("Var. seed") else {}
    data, info = run_xyz(client, xyz_args(axis, values), **extra)
    cells = [params_of(t) for t in info["infotexts"][1:]]
    prompts = info["all_prompts"][1:]
    if axis == PROMPT_SR:
        assert prompts == [BASE["prompt"], BASE["prompt"].replace("red", "green")]
    elif axis == ix("Prompt order"):
        assert prompts == [BASE["prompt"], "a blue circle on a red background"]
    elif key is None:  # Sigma Churn: a sampler parameter, written only when not the default
        assert len(cells) == 2
    else:
        assert [c.get(key) for c in cells] == expected


def test_styles_axis_and_checkpoint_axis_switches_each_model_once(client, ctx, caplog):
    data, info = run_xyz(client, xyz_args(ix("Styles"), "sunny"))
    assert info["all_prompts"][-1].endswith("sunny day") and info["styles"] == ["sunny"]
    titles = {m["model_name"]: m["title"] for m in client.get("/sdapi/v1/sd-models").json()}
    caplog.set_level(logging.INFO, logger="modules.models.registry")
    # checkpoint on Y (the inner axis by index): the plot still runs all of one model, then the other
    data, info = run_xyz(client, xyz_args(STEPS, "1, 2", CHECKPOINT, f"{titles[MODEL_A]}, {titles[MODEL_B]}"))
    loads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loading ")]
    assert len(loads) <= 2 and len(set(loads)) == len(loads), loads
    models = [params_of(t)["Model"] for t in info["infotexts"][1:]]
    assert models == [MODEL_A, MODEL_A, MODEL_B, MODEL_B]


@pytest.mark.parametrize("args,loc,words", [
    (xyz_args(SAMPLER, "Euler, Nope"), 1, ["X axis", "unknown sampler", "'Nope'"]),
    (xyz_args(STEPS, "2", CHECKPOINT, "no-such-model"), 4, ["Y axis", "unknown checkpoint", "'no-such-model'"]),
    (xyz_args(STEPS, "1, 500"), 1, ["Steps", "500"]),
    (xyz_args(STEPS, "1-x"), 1, ["X axis", "'1-x'"]),
    (xyz_args(PROMPT_SR, "purple, pink"), 1, ["Prompt S/R", "'purple'"]),
    (xyz_args(ix("Schedule min sigma"), "1"), 0, ["X axis", "Schedule min sigma", "not available"]),
    (xyz_args(ix("Hires steps"), "1"), 1, ["X axis", "hires fix"]),
    (xyz_args(99, "1"), 0, ["out of range"]),
])
def test_bad_axis_values_are_refused_before_running(client, ctx, args, loc, words):
    before = ctx.queue.pending_count, len(ctx.queue._jobs)
    response = client.post("/sdapi/v1/txt2img", json={**BASE, "script_name": "x/y/z plot", "script_args": args})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "script_args", loc]
    for word in words:
        assert word in detail["msg"], detail["msg"]
    assert len(ctx.queue._jobs) == before[1]  # nothing was queued


def test_unknown_script_name_and_bad_arg_types_name_the_field(client):
    response = client.post("/sdapi/v1/txt2img", json={**BASE, "script_name": "nope", "script_args": []})
    assert response.status_code == 422 and "x/y/z plot" in response.text.lower()
    response = client.post("/sdapi/v1/txt2img", json={**BASE, "script_name": "X/Y/Z plot",
                                                      "script_args": xyz_args(STEPS, "1", margin=9999)})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "script_args", 16]


def test_older_a1111_positional_layout_and_range_syntax(client):
    # A1111 <= 1.9: ..., no_fixed_seeds, margin_size, csv_mode (no vary_seeds)
    old = [SEED, "1-10 [3]", [], STEPS, "2-1 (-1)", [], NOTHING, "", [], True, True, False, False, 4, False]
    data, info = run_xyz(client, old)
    seeds = [params_of(t)["Seed"] for t in info["infotexts"][1:]]
    steps = [params_of(t)["Steps"] for t in info["infotexts"][1:]]
    assert seeds == ["1", "5", "10"] * 2 and steps == ["2"] * 3 + ["1"] * 3
    grid = decode(data["images"][0])
    assert grid.width > 3 * 64 + 2 * 4  # margins between the cells, plus the label border


def test_keep_minus_one_seeds(client):
    _, fixed = run_xyz(client, xyz_args(STEPS, "1, 2"), seed=-1)
    seeds = [params_of(t)["Seed"] for t in fixed["infotexts"][1:]]
    assert seeds[0] == seeds[1]
    _, kept = run_xyz(client, xyz_args(STEPS, "1, 2", no_fixed_seeds=True), seed=-1)
    seeds = [params_of(t)["Seed"] for t in kept["infotexts"][1:]]
    assert seeds[0] != seeds[1]


def test_z_axis_sub_grids(client):
    data, info = run_xyz(client, xyz_args(STEPS, "1, 2", NOTHING, "", CFG, "3, 5", sub_grids=True))
    assert info["index_of_first_image"] == 3 and len(data["images"]) == 3 + 4
    main, sub1, sub2 = (decode(b) for b in data["images"][:3])
    assert main.width > sub1.width * 2 - 1 and sub1.size == sub2.size
    assert params_of(info["infotexts"][0])["Z Type"] == "CFG Scale"


def test_prompt_matrix(client):
    body = {**BASE, "prompt": "a circle | red | on blue", "script_name": "Prompt matrix",
            "script_args": [False, False, "positive", "comma", 0]}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data, info = response.json(), json.loads(response.json()["info"])
    assert info["all_prompts"][1:] == ["a circle", "a circle, red", "a circle, on blue", "a circle, red, on blue"]
    grid = decode(data["images"][0])
    assert grid.width > 128 and grid.height > 128  # 2x2 cells with labels on top and left
    assert len({params_of(t)["Seed"] for t in info["infotexts"][1:]}) == 1
    no_bar = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "a circle"})
    assert no_bar.status_code == 422 and "|" in no_bar.text


def test_progress_counts_every_cell_and_interrupt_keeps_a_partial_grid(ctx):
    from tests.test_selectable_scripts import xyz_call

    # progress: 3 x 2 cells, batch count 2 -> 12 batches reported on the one job
    request = GenerationRequest(prompt="a circle", width=64, height=64, steps=2, seed=3, batch_count=2,
                                save_images=False, script=xyz_call(ctx, STEPS, "1, 2, 2", CFG, "3, 5"))
    job = ctx.queue.submit(request)
    seen = set()
    wait_for(lambda: seen.add(job.control.snapshot().batch_index) or job.future.done(), timeout=300, every=0.005)
    result = job.result()
    snap = job.control.snapshot()
    assert snap.batch_count == 12 and snap.batch_index == 11 and max(seen) == 11 and len(seen) > 2
    assert len(result.images) == 1 + 6 and not result.interrupted

    # interrupt once the second cell runs: the cells done are kept and drawn into the full-size grid
    request = GenerationRequest(prompt="a circle", width=64, height=64, steps=3, seed=3, save_images=False,
                                script=xyz_call(ctx, STEPS, "3, 3", CFG, "3, 5"))
    job = ctx.queue.submit(request)
    wait_for(lambda: job.control.snapshot().batch_index >= 1 or job.future.done(), timeout=300, every=0.005)
    ctx.queue.interrupt(job.id)
    result = job.result()
    assert result.interrupted
    done = len(result.images) - result.grids
    assert 1 <= done < 4
    assert result.images[0].size == result.images[0].size and result.images[0].width > 128
    assert result.images[0].height > 128  # still 2 rows: the missing cells are black


@pytest.mark.parametrize("axis,values,key,expected", [
    ("Hires sampler", "DDIM, Heun", "Hires sampler", ["DDIM", "Heun"]),
    ("Hires upscaler", "Latent, Lanczos", "Hires upscaler", ["Latent", "Lanczos"]),
    ("Denoising", "0.3, 0.6", "Denoising strength", ["0.3", "0.6"]),
])
def test_hires_axis_types_change_their_parameter(client, axis, values, key, expected):
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 1, "denoising_strength": 0.5}
    data, info = run_xyz(client, xyz_args(ix(axis), values), **hires)
    cells = [params_of(t) for t in info["infotexts"][1:]]
    assert [c.get(key) for c in cells] == expected
    assert all(c["Hires upscale"] == "1.5" for c in cells)
