"""Pieces of prompts from file, SD upscale, loopback and outpainting without the server: A1111's
per-line option parsing, the tiles and their blend, the loopback curves, the outpainting canvas and
its noise fill, the positional layouts and the UI's value order. The runs through the real engine
are in tests/api/test_scripts_more_api.py."""

from __future__ import annotations

import math
import sys
from importlib import util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPTS_EXT = Path(__file__).resolve().parents[1] / "extensions-builtin" / "scripts"
if str(SCRIPTS_EXT) not in sys.path:  # the loader puts it there while the scripts import; tests need it too
    sys.path.append(str(SCRIPTS_EXT))

from selectable_scripts import outpaint, tiles  # noqa: E402


def load(name: str):
    spec = util.spec_from_file_location(f"{name}_under_test", SCRIPTS_EXT / "scripts" / f"{name}.py")
    module = util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


pff = load("prompts_from_file")
sdu = load("sd_upscale")
loop = load("loopback")
mk2 = load("outpainting_mk_2")
pmo = load("poor_mans_outpainting")


# ---------------------------------------------------------------- prompts from file


def test_parse_line_follows_a1111_cmdargs():
    got = pff.parse_line('--prompt a red "big circle" --negative_prompt \'blurry, dark\' --steps 10 --seed 1 '
                         '--cfg_scale 5.5 --sampler_name k_euler_a --width 64 --n_iter 2 --tiling true '
                         '--restore_faces false --do_not_save_samples true')
    assert got == {"prompt": "a red big circle", "negative_prompt": "blurry, dark", "steps": 10, "seed": 1,
                   "cfg_scale": 5.5, "sampler_name": "Euler a", "width": 64, "n_iter": 2, "tiling": True,
                   "restore_faces": False, "do_not_save_samples": True}
    assert pff.parse_line("--sampler_name 'DPM++ 2M Karras'") == {"sampler_name": "DPM++ 2M Karras"}
    from modules.processing import samplers

    assert pff.parse_line("--sampler_index 1") == {"sampler_index": samplers.SAMPLERS[1].name}


@pytest.mark.parametrize("line,tag,words", [
    ("--colour red", "colour", ["unknown option --colour"]),
    ("--steps", "steps", ["no value"]),
    ("--steps 1.5", "steps", ["'1.5'"]),
    ("a cat --steps 3", None, ["'a' is not an option"]),
    ('--prompt "a cat', None, ["quotation"]),
    ("--sampler_name nope", "sampler_name", ["nope"]),
    ("--sampler_index 999", "sampler_index", ["out of range"]),
])
def test_parse_line_errors_name_the_option(line, tag, words):
    with pytest.raises(pff.LineError) as err:
        pff.parse_line(line)
    assert err.value.tag == tag
    for word in words:
        assert word in str(err.value)


def test_prompts_from_file_layouts_and_lines():
    script = pff.PromptsFromFile()
    new = script.args_from_api([True, False, "end", "a\nb"])
    assert (new.checkbox_iterate, new.prompt_position, new.prompt_txt) == (True, "end", "a\nb")
    old = script.args_from_api([False, True, "a cat"])  # A1111 before 1.6
    assert (old.checkbox_iterate_batch, old.prompt_position, old.prompt_txt) == (True, "start", "a cat")
    assert script.api_position("prompt_txt", [0, 0, "x"]) == 2 and script.api_position("prompt_txt") == 3
    assert pff.prompt_lines(" a \n\n  b\r\n") == ["a", "b"]
    assert pff._join("cat", "on blue", "start") == "cat on blue" and pff._join("cat", "", "end") == "cat"


def test_plan_lines_iterates_seeds_by_the_tabs_batch():
    from modules.extensions.selectable import ScriptServices
    from modules.generation.request import GenerationRequest

    request = GenerationRequest(prompt="x", seed=10, batch_size=2, batch_count=3, width=64, height=64)
    args = pff.PromptsFromFileArgs(checkbox_iterate=True, prompt_txt="a\n--prompt b --seed 99\nc")
    plans = pff.plan_lines(request, args, ScriptServices())
    assert [sub.seed for _, sub in plans] == [10, 99, 22]  # + batch size x batch count per line
    assert [sub.prompt for _, sub in plans] == ["a x", "b x", "c x"]


# ---------------------------------------------------------------- tiles


@pytest.mark.parametrize("size,tile,overlap,expected", [
    (192, 64, 8, [0, 42, 85, 128]),  # ceil(184 / 56) = 4 tiles, evenly spread, the last flush
    (64, 64, 8, [0]),
    (100, 64, 32, [0, 18, 36]),  # ceil(68 / 32) = 3
    (128, 64, 0, [0, 64]),
])
def test_tile_starts(size, tile, overlap, expected):
    assert tiles.starts(size, tile, overlap) == expected


def test_split_and_combine_give_the_picture_back_and_feather_the_overlaps():
    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8))
    grid = tiles.split(picture, 64, 64, 16)
    assert grid.columns == 4 and len(grid.rows) == 3 and all(t.image.size == (64, 64) for t in grid.tiles)
    assert np.array_equal(np.asarray(tiles.combine(grid)), np.asarray(picture))
    # tiles of two flat colours: across the overlap the second fades in linearly
    for t in grid.tiles:
        t.image = Image.new("RGB", (64, 64), (0, 0, 0) if t.x == 0 else (255, 255, 255))
    blended = np.asarray(tiles.combine(grid))[0, :, 0]
    second = grid.rows[0][1].x
    ramp = blended[second:second + 16]
    assert ramp[0] == 0 and np.all(np.diff(ramp.astype(int)) > 0) and blended[second + 16] == 255
    with pytest.raises(ValueError, match="overlap"):
        tiles.split(picture, 64, 64, 64)


def test_sd_upscale_sizes_and_positions():
    assert sdu.upscaled_size(100, 100, 1.5, "Lanczos") == (144, 144)
    assert sdu.upscaled_size(512, 384, 2.0, "R-ESRGAN 4x+") == (1024, 768)
    assert sdu.upscaled_size(100, 90, 3.0, "None") == (100, 90)
    script = sdu.SdUpscale()
    args = script.args_from_api(["", 8, "Lanczos", 2.0])
    assert (args.overlap, args.upscaler_index, args.scale_factor) == (8, "Lanczos", 2.0)
    assert script.args_from_ui([32, "Nearest", 1.5]).overlap == 32  # the UI has no info-text value
    assert script.api_position("scale_factor") == 3


# ---------------------------------------------------------------- loopback


def test_loopback_curves():
    def run(curve, loops=5, final=0.0):
        return loop.strengths(1.0, loop.LoopbackArgs(loops=loops, final_denoising_strength=final,
                                                     denoising_curve=curve))

    assert run("Linear") == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    aggressive, lazy = run("Aggressive"), run("Lazy")
    assert aggressive[1] == pytest.approx(1 - math.sin(math.pi / 8)) and aggressive[-1] == pytest.approx(0)
    assert lazy[1] == pytest.approx(math.cos(math.pi / 8)) and lazy[-1] == pytest.approx(0)
    assert aggressive[2] < 0.5 < lazy[2]  # aggressive drops fast, lazy slowly
    assert run("Linear", loops=1, final=0.2) == [1.0]


# ---------------------------------------------------------------- outpainting


@pytest.mark.parametrize("size,pixels,directions,expected", [
    ((64, 64), 32, ["left", "up"], (32, 0, 32, 0, 96, 96)),
    ((64, 64), 16, outpaint.DIRECTIONS, (16, 16, 16, 16, 96, 96)),
    ((60, 60), 16, ["left"], (20, 0, 0, 4, 80, 64)),  # rounding to 8 goes to the growing side (A1111)
    ((64, 64), 12, ["left", "right"], (12, 12, 0, 0, 88, 64)),
    ((64, 64), 10, ["right"], (0, 16, 0, 0, 80, 64)),
])
def test_expansion(size, pixels, directions, expected):
    exp = outpaint.expansion(*size, pixels, directions)
    assert (exp.left, exp.right, exp.up, exp.down, exp.width, exp.height) == expected


def test_matched_noise_keeps_known_pixels_and_takes_their_colours():
    rng = np.random.default_rng(0)
    image = np.zeros((64, 96, 3))
    image[:, 32:] = 0.6 + rng.random((64, 64, 3)) * 0.2  # known: bright, between 0.6 and 0.8
    mask = np.zeros((64, 96))
    mask[:, :32] = 1.0
    filled = outpaint.matched_noise(image, mask, 1.0, 0.05)
    assert np.array_equal(filled[:, 32:], image[:, 32:])
    new = filled[:, :32]
    assert 0.6 <= new.min() and new.max() <= 0.8 and new.std() > 0.02  # the known histogram, not flat
    assert np.array_equal(filled, outpaint.matched_noise(image, mask, 1.0, 0.05))  # deterministic


def test_outpainting_masks_and_layouts():
    init = Image.new("RGB", (64, 64), (10, 200, 30))
    exp = outpaint.expansion(64, 64, 16, ["left", "down"])
    canvas, mask = pmo.canvas_and_mask(init, exp, 4)
    assert canvas.size == mask.size == (80, 80) and canvas.getpixel((16, 0)) == (10, 200, 30)
    assert mask.getpixel((15, 5)) == 255 and mask.getpixel((23, 5)) == 255  # 2 x blur into the picture
    assert mask.getpixel((25, 5)) == 0 and mask.getpixel((40, 70)) == 255
    grown, grown_mask, res = mk2.grow(init, "right", 16, 4, mk2.OutpaintingMk2Args())
    assert res == (80, 64) and grown.getpixel((0, 0)) == (10, 200, 30)
    assert grown_mask.getpixel((61, 10)) == 255 and grown_mask.getpixel((60, 10)) == 0  # PIL: the end is inside
    script = mk2.OutpaintingMk2()
    args = script.args_from_api(["", 32, 4, ["left"], 0.5, 0.1])
    assert (args.pixels, args.mask_blur, args.direction, args.noise_q, args.color_variation) == (
        32, 4, ["left"], 0.5, 0.1)
    assert script.args_from_ui([32, 4, ["left"], 0.5, 0.1]) == args
    poor = pmo.PoorMansOutpainting().args_from_api([16, 4, 3, ["up"]])
    assert poor.inpainting_fill == "latent nothing"


def test_every_script_builds_its_controls_in_gradio():
    import gradio as gr

    for script, tab in ((pff.PromptsFromFile(), False), (pff.PromptsFromFile(), True), (sdu.SdUpscale(), True),
                        (loop.Loopback(), True), (mk2.OutpaintingMk2(), True), (pmo.PoorMansOutpainting(), True)):
        with gr.Blocks():
            components = script.ui(tab)
        values = [c.value for c in components]
        args = script.args_from_ui(values)
        assert args == script.Args(), (script.title, args)  # the controls' defaults are the Args defaults


def test_uploaded_prompt_file_fills_the_textbox():
    _, update = pff.load_prompt_file("a cat \r\n--prompt a dog --steps 3\n".encode())
    assert update["value"] == "a cat\n--prompt a dog --steps 3\n"
