"""What the server log says about loading a model and running a job, on the embedded model."""

from __future__ import annotations

import logging
import re
import warnings

import pytest

from modules.models.options import ModelOptions
from modules.models.registry import ModelRegistry
from modules.paths import Paths
from modules.processing.engine import Engine
from modules.generation.request import GenerationRequest
from modules.settings import SettingsStore


@pytest.fixture()
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(Paths(data_dir=tmp_path), ModelOptions(device="cpu", no_hashing=True))


def test_loading_the_embedded_model_logs_its_time_and_raises_no_deprecation(registry, caplog):
    caplog.set_level(logging.INFO, logger="modules.models.registry")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.simplefilter("error", FutureWarning)  # diffusers: "`torch_dtype` is deprecated"
        model = registry.get()
    assert not [w for w in seen if "torch_dtype" in str(w.message)]
    lines = [r.getMessage() for r in caplog.records if r.name == "modules.models.registry"]
    loaded = [line for line in lines if re.fullmatch(rf"model {re.escape(model.title)} loaded in \d+\.\d s", line)]
    assert loaded, lines


def test_each_job_logs_one_summary_line(registry, tmp_path, caplog):
    engine = Engine(registry, SettingsStore(None), Paths(data_dir=tmp_path))
    caplog.set_level(logging.INFO, logger="modules.processing.engine")
    request = GenerationRequest(prompt="a red circle", steps=3, width=64, height=64, seed=1, batch_size=2,
                                sampler_name="DPM++ 2M", scheduler="Karras", save_images=False)
    engine.generate(request)
    lines = [r.getMessage() for r in caplog.records if r.name == "modules.processing.engine"]
    assert len(lines) == 1, lines
    assert re.fullmatch(r"txt2img 64x64, 3 steps, DPM\+\+ 2M \(Karras\): 2 image\(s\) in \d+\.\d s", lines[0]), lines
