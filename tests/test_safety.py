"""NSFW blacking through the real engine: a tiny random safety checker whose thresholds flag every
image or none, read from models/safety_checker as diffusers saves it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.extensions.runner import ExtensionSet
from modules.generation.request import GenerationRequest
from modules.paths import Paths
from modules.postprocess.safety import SafetyCheckerUnavailableError
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.safety_checker_files import write_checker
from tests.postprocess_hooks import SeenByHooks
from tests.tiny_model import FixedProvider, tiny_loaded_model


@pytest.fixture(scope="module")
def models():
    return FixedProvider(tiny_loaded_model(seed=0))


def make_engine(models, data_dir: Path, filter_nsfw: bool, extensions=()) -> Engine:
    settings = SettingsStore(None)
    settings.update({"filter_nsfw": filter_nsfw})
    return Engine(models, settings, Paths(data_dir=data_dir), extensions=ExtensionSet(extensions))


def request(**fields) -> GenerationRequest:
    base = dict(prompt="a red circle", seed=3, steps=2, sampler_name="Euler", save_images=False)
    return GenerationRequest(**{**base, **fields})


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_flagged_images_are_black_and_the_result_says_which(models, tmp_path):
    write_checker(tmp_path / "models" / "safety_checker", flag_all=True)
    hooks = SeenByHooks()
    engine = make_engine(models, tmp_path, filter_nsfw=True, extensions=[hooks])
    result = engine.generate(request(batch_size=2, save_images=True))
    assert len(result.images) == 2
    for image in result.images:
        assert image.size == (64, 64) and px(image).max() == 0
    for path in result.saved_paths:  # the files on disk are black too
        with Image.open(path) as saved:
            assert px(saved).max() == 0
    assert all(px(seen).max() == 0 for seen in hooks.images)  # hooks run after the NSFW step
    blacked = [w for w in result.warnings if "replaced by a black image" in w]
    assert len(blacked) == 2
    assert blacked[0].startswith("image 1 (seed 3)") and blacked[1].startswith("image 2 (seed 4)")
    assert "filter_nsfw" in blacked[0]


def test_images_the_checker_passes_are_unchanged(models, tmp_path):
    plain = make_engine(models, tmp_path / "plain", filter_nsfw=False).generate(request())
    write_checker(tmp_path / "checked" / "models" / "safety_checker", flag_all=False)
    checked = make_engine(models, tmp_path / "checked", filter_nsfw=True).generate(request())
    assert px(checked.images[0]).max() > 0
    assert np.array_equal(px(plain.images[0]), px(checked.images[0]))
    assert not any("black image" in w for w in checked.warnings)


def test_a_pipelines_safety_checker_and_feature_extractor_folders_work(models, tmp_path):
    write_checker(tmp_path / "models" / "safety_checker", flag_all=True, pipeline_layout=True)
    result = make_engine(models, tmp_path, filter_nsfw=True).generate(request())
    assert px(result.images[0]).max() == 0


def test_filter_on_without_a_checker_fails_before_sampling_and_names_what_to_install(models, tmp_path):
    engine = make_engine(models, tmp_path, filter_nsfw=True)
    with pytest.raises(SafetyCheckerUnavailableError) as err:
        engine.generate(request(save_images=True))
    message = str(err.value)
    folder = str(tmp_path / "models" / "safety_checker")
    for part in (folder, "config.json", "model.safetensors", "preprocessor_config.json", "filter_nsfw"):
        assert part in message
    assert not (tmp_path / "outputs").exists()  # nothing was generated or saved


def test_filter_off_never_needs_a_checker(models, tmp_path):
    result = make_engine(models, tmp_path, filter_nsfw=False).generate(request())
    assert px(result.images[0]).max() > 0


def test_a_corrupt_checker_is_a_clear_error(models, tmp_path):
    folder = write_checker(tmp_path / "models" / "safety_checker", flag_all=True)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SafetyCheckerUnavailableError, match="cannot be loaded"):
        make_engine(models, tmp_path, filter_nsfw=True).generate(request())
