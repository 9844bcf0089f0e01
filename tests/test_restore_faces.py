"""`restore_faces` through the real engine: the face restorer the settings name (a random-weight
CodeFormer in its released layout) restores the faces of each image before it is saved; the
infotext says "Face restoration: CodeFormer" as A1111 writes it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.extensions.runner import ExtensionSet
from modules.generation.request import GenerationRequest, Mode
from modules.infotext import parse_infotext, request_fields_from_infotext
from modules.paths import Paths
from modules.postprocess.face_restoration import FaceRestorerMissingError
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.face_model_files import write_restorer
from tests.postprocess_hooks import SeenByHooks
from tests.tiny_model import FixedProvider, tiny_loaded_model


@pytest.fixture(scope="module")
def models():
    return FixedProvider(tiny_loaded_model(seed=0))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A data folder with CodeFormer (random weights) in models/Codeformer."""
    root = tmp_path_factory.mktemp("faces")
    write_restorer(root / "models", "CodeFormer")
    return root


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())  # 512x512, one face near the top middle


def make_engine(models, data_dir, extensions=()) -> Engine:
    settings = SettingsStore(None)
    settings.update({"face_restoration_model": "CodeFormer", "code_former_weight": 0.5})
    return Engine(models, settings, Paths(data_dir=data_dir), extensions=ExtensionSet(extensions))


def passthrough(photo: Image.Image, **fields) -> GenerationRequest:
    """img2img at denoising strength 0: the photograph itself is the generated image."""
    return GenerationRequest(**{**dict(mode=Mode.IMG2IMG, init_images=(photo,), denoising_strength=0.0,
                                      width=512, height=512, prompt="an astronaut", seed=9, steps=2,
                                      sampler_name="Euler", save_images=False), **fields})


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_restore_faces_changes_the_face_and_nothing_far_from_it(models, installed, photo):
    hooks = SeenByHooks()
    engine = make_engine(models, installed, [hooks])
    plain = engine.generate(passthrough(photo))
    restored = engine.generate(passthrough(photo, restore_faces=True, save_images=True))
    before, after = px(plain.images[0]), px(restored.images[0])
    assert np.array_equal(before, px(photo))  # without it, the picture is handed through
    face, corner = (slice(80, 220), slice(170, 320)), (slice(400, 512), slice(0, 100))
    assert np.abs(after[face] - before[face]).mean() > 5
    assert np.array_equal(after[corner], before[corner])
    assert np.array_equal(px(hooks.images[-1]), after)  # extensions' hooks see the restored image
    with Image.open(restored.saved_paths[0]) as saved:
        assert np.array_equal(px(saved), after)
    # A1111's infotext: the key right after the seed, the model's name as its value
    text = restored.infotexts[0]
    assert "Seed: 9, Face restoration: CodeFormer, Size: 512x512" in text
    assert "Face restoration" not in plain.infotexts[0]
    assert parse_infotext(text).params["Face restoration"] == "CodeFormer"
    assert request_fields_from_infotext(text)["restore_faces"] is True
    assert request_fields_from_infotext(plain.infotexts[0])["restore_faces"] is False


def test_a_missing_restorer_fails_before_sampling_and_names_the_file(models, tmp_path, photo):
    engine = make_engine(models, tmp_path)
    with pytest.raises(FaceRestorerMissingError) as err:
        engine.generate(passthrough(photo, restore_faces=True, save_images=True))
    assert "codeformer.pth" in str(err.value) and str(tmp_path / "models" / "Codeformer") in str(err.value)
    assert not (tmp_path / "outputs").exists()
    assert engine.generate(passthrough(photo)).images  # the engine carries on
