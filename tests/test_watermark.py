"""The invisible watermark (setting add_invisible_watermark): added last, after extensions'
postprocess_image hooks, and decoded back from the saved PNG file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.extensions.runner import ExtensionSet
from modules.generation.request import GenerationRequest
from modules.paths import Paths
from modules.postprocess import watermark
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.postprocess_hooks import SeenByHooks
from tests.tiny_model import FixedProvider, tiny_loaded_model

SIZE = 256  # invisible-watermark needs 256x256 pixels or more


@pytest.fixture(scope="module")
def models():
    return FixedProvider(tiny_loaded_model(seed=0))


def make_engine(models, tmp_path, on: bool, extensions=()) -> Engine:
    settings = SettingsStore(None)
    settings.update({"add_invisible_watermark": on})
    return Engine(models, settings, Paths(data_dir=tmp_path), extensions=ExtensionSet(extensions))


def request(**fields) -> GenerationRequest:
    base = dict(prompt="a red circle", seed=5, steps=2, sampler_name="Euler", width=SIZE, height=SIZE)
    return GenerationRequest(**{**base, **fields})


def photograph() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())  # 512x512


def test_the_mark_is_read_back_from_the_saved_file(models, tmp_path):
    """img2img at denoising strength 0 hands the photograph through unchanged: DWT-DCT decodes
    reliably from photographs, less so from the random tiny model's noise-like pictures."""
    hooks = SeenByHooks()
    engine = make_engine(models, tmp_path, on=True, extensions=[hooks])
    result = engine.generate(request(mode="img2img", init_images=(photograph(),), denoising_strength=0.0,
                                     width=512, height=512))
    with Image.open(result.saved_paths[0]) as saved:
        assert saved.format == "PNG"
        assert watermark.read_watermark(saved) == b"StableDiffusionV1"
    assert watermark.read_watermark(hooks.images[0]) != watermark.MARK  # hooks see the image before it
    assert np.abs(np.asarray(result.images[0], np.int16) - np.asarray(hooks.images[0], np.int16)).mean() < 8


def test_off_by_default_and_no_mark_without_the_setting(models, tmp_path):
    assert SettingsStore(None).get().add_invisible_watermark is False
    result = make_engine(models, tmp_path, on=False).generate(
        request(mode="img2img", init_images=(photograph(),), denoising_strength=0.0, width=512, height=512))
    with Image.open(result.saved_paths[0]) as saved:
        assert watermark.read_watermark(saved) != watermark.MARK


def test_a_picture_too_small_for_the_mark_is_saved_without_it_and_said_so(models, tmp_path):
    result = make_engine(models, tmp_path, on=True).generate(request(width=64, height=64, batch_size=2))
    assert len(result.images) == 2
    notes = [w for w in result.warnings if "invisible watermark not added" in w]
    assert notes == ["invisible watermark not added: 64x64 is under the 65,536 pixels it needs",
                     "invisible watermark not added: 128x64 is under the 65,536 pixels it needs"]  # the grid


def test_add_and_read_on_a_photograph():
    photo = photograph()
    assert watermark.read_watermark(watermark.add_watermark(photo)) == watermark.MARK
    with pytest.raises(ValueError, match="too small"):
        watermark.add_watermark(photo.resize((64, 64)))
