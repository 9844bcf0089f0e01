"""The shipped model through the real engine: prompts steer colours and shapes (a small slice of
`python -m tools.default_model.evaluate`, which also runs the CFG, negative-prompt, img2img and
inpaint checks)."""

from __future__ import annotations

import pytest
from PIL import Image

from modules.paths import EMBEDDED_MODEL_DIR
from tools.default_model import dataset
from tools.default_model.engine_generator import EngineGenerator
from tools.default_model.evaluate import eval_plan, run_table

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


def test_native_size_is_the_default(gen):
    image = gen("a red circle on a blue background", "", 0, 7.0, 4)
    assert isinstance(image, Image.Image) and image.size == (64, 64)
