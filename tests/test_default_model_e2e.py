"""The shipped model through the real engine: a slice of `python -m tools.default_model.evaluate`
(which scores all 224 prompts over several seeds): prompts steer colours and shapes, CFG helps, a
negative prompt works, img2img keeps colours and inpainting changes only the masked region."""

from __future__ import annotations

import pytest
from PIL import Image

from modules.paths import EMBEDDED_MODEL_DIR
from tools.default_model import dataset
from tools.default_model.engine_generator import EngineGenerator
from tools.default_model.evaluate import (
    check_cfg,
    check_img2img,
    check_inpaint,
    check_negative_prompt,
    eval_plan,
    run_table,
)

STEPS = 20


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> EngineGenerator:
    assert (EMBEDDED_MODEL_DIR / "model_index.json").is_file(), "the embedded model must ship with the repo"
    return EngineGenerator(data_dir=tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="module")
def jobs():
    return eval_plan(seeds=[0], fraction=32 / len(dataset.all_combos()))


def test_prompts_steer_colours_and_shapes(gen, jobs):
    table = run_table(gen, jobs, cfg=7.0, steps=STEPS, progress=False)
    # the evaluator's bar is 90/90/75 over all 448 images; 32 images vary more
    assert table.accuracy("fg") >= 0.8, table.format()
    assert table.accuracy("bg") >= 0.8, table.format()
    assert table.accuracy("shape") >= 0.75, table.format()


def test_cfg_7_scores_higher_than_cfg_1(gen, jobs):
    result = check_cfg(gen, jobs, steps=STEPS)
    assert result.passed, result.detail


def test_negative_prompt_lowers_the_named_colour(gen, jobs):
    result = check_negative_prompt(gen, jobs[:12], steps=STEPS)
    assert result.passed, result.detail


def test_img2img_at_0_3_keeps_the_colours(gen):
    result = check_img2img(gen, n=10, steps=STEPS)
    assert result.passed, result.detail


def test_inpaint_changes_only_the_masked_region(gen):
    result = check_inpaint(gen, n=8, steps=STEPS)
    assert result.passed, result.detail


def test_native_size_is_the_default(gen):
    image = gen("a red circle on a blue background", "", 0, 7.0, 4)
    assert isinstance(image, Image.Image) and image.size == (64, 64)
