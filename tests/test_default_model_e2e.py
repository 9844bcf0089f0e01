"""The shipped model through the real engine: prompts, CFG, negative prompts, img2img and inpaint
really steer the pictures (a small slice of `python -m tools.default_model.evaluate`)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.paths import EMBEDDED_MODEL_DIR
from tools.default_model import dataset
from tools.default_model.engine_generator import EngineGenerator
from tools.default_model.evaluate import check_cfg, check_negative_prompt, eval_plan, inpaint_case, run_table

STEPS = 20
CHANCE = 1 / len(dataset.COLORS)


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> EngineGenerator:
    assert (EMBEDDED_MODEL_DIR / "model_index.json").is_file(), "the embedded model must ship with the repo"
    return EngineGenerator(data_dir=tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="module")
def jobs():
    return eval_plan(seeds=[0], fraction=16 / len(dataset.all_combos()))


def test_prompts_steer_colours_and_shapes_far_above_chance(gen, jobs):
    table = run_table(gen, jobs, cfg=7.0, steps=STEPS, progress=False)
    assert table.accuracy("fg") >= 4 * CHANCE, table.format()
    assert table.accuracy("bg") >= 4 * CHANCE, table.format()
    assert table.accuracy("shape") >= 2 / len(dataset.SHAPES), table.format()


def test_cfg_7_beats_cfg_1(gen, jobs):
    result = check_cfg(gen, jobs, steps=STEPS)
    assert result.passed, result.detail


def test_negative_prompt_lowers_the_named_colour(gen, jobs):
    result = check_negative_prompt(gen, jobs[:8], steps=STEPS)
    assert result.passed, result.detail


def test_img2img_at_low_strength_keeps_the_input_colours(gen):
    from tools.default_model.analyze import analyze

    rng = np.random.default_rng(42)
    kept = []
    for i in range(8):
        spec = dataset.sample_spec(rng)
        source = dataset.render(spec)
        out = gen.generate_img2img(source, dataset.canonical_prompt(*spec.combo()), seed=i, strength=0.3, cfg=7.0,
                                   steps=STEPS)
        got = analyze(out)
        kept.append(got.fg == spec.fg and got.bg == spec.bg)
    assert np.mean(kept) >= 0.75, kept


def test_inpaint_changes_only_the_masked_region(gen):
    changed = []
    for i in range(4):
        spec, source, mask, new_shape = inpaint_case(i)
        out = gen.generate_inpaint(source, mask, dataset.canonical_prompt(spec.fg, new_shape, spec.bg), seed=i,
                                   cfg=7.0, steps=STEPS)
        before, after = np.asarray(source, np.int16), np.asarray(out, np.int16)
        outside = np.asarray(mask) == 0
        assert np.array_equal(after[outside], before[outside])  # composited back exactly
        changed.append(np.abs(after[~outside] - before[~outside]).mean())
    assert np.mean(changed) > 5.0, changed


def test_native_size_is_the_default(gen):
    image = gen("a red circle on a blue background", "", 0, 7.0, 4)
    assert isinstance(image, Image.Image) and image.size == (64, 64)
