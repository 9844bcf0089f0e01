"""Speed options (attention kernel, channels_last, bf16) load through the real registry and give the
pixels of the default path on the same seed, within a small tolerance (fp32 on the CPU)."""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pytest
import torch

from modules.cmd_args import parse_args
from modules.generation.request import GenerationRequest
from modules.models import speed
from modules.models.options import ModelOptions
from modules.models.registry import ModelRegistry
from modules.paths import Paths
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.tiny_model import save_tiny_model_dir
from tests.torch_threads import one_torch_thread

REQUEST = GenerationRequest(prompt="a red circle", negative_prompt="blur", seed=7, steps=4, cfg_scale=7.0,
                            sampler_name="Euler", width=64, height=64, batch_size=2, save_images=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    save_tiny_model_dir(root / "models" / "Stable-diffusion" / "tiny", seed=3)
    return root


def _run(data_dir, **opts):
    """(loaded model, pixels as int arrays) for one job through registry + engine with these options."""
    paths = Paths(data_dir=data_dir)
    registry = ModelRegistry(paths, ModelOptions(device="cpu", **opts), embedded_dir=None)
    result = Engine(registry, SettingsStore(None), paths).generate(REQUEST)
    return registry.get(), [np.asarray(im, dtype=np.int16) for im in result.images]


@pytest.fixture(scope="module")
def baseline(data_dir):
    model, pixels = _run(data_dir)
    assert model.dtype == torch.float32  # the reference: fp32 on the CPU, SDPA
    return pixels


def _max_diff(a, b) -> int:
    return max(int(np.abs(x - y).max()) for x, y in zip(a, b))


def test_default_is_sdpa_chosen_explicitly(data_dir):
    model, _ = _run(data_dir)
    assert speed.current_attention(model.unet) == speed.SDPA
    assert speed.current_attention(model.vae) == speed.SDPA
    assert not model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("choice", [speed.SDPA_NO_MEM, speed.CLASSIC])
def test_attention_choices_match_the_default_pixels(data_dir, baseline, choice):
    model, pixels = _run(data_dir, attention=choice)
    assert speed.current_attention(model.unet) == choice and speed.current_attention(model.vae) == choice
    assert _max_diff(pixels, baseline) <= 2


def test_channels_last_matches_the_default_pixels(data_dir, baseline):
    model, pixels = _run(data_dir, channels_last=True)
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert _max_diff(pixels, baseline) <= 2


def test_bf16_is_close_to_fp32(data_dir, baseline):
    model, pixels = _run(data_dir, precision="bf16")
    assert model.dtype == torch.bfloat16 and model.vae.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: the same picture, a few levels off here and there (measured:
    # mean 0.8, max 7 of 255)
    mean = np.mean([np.abs(x - y).mean() for x, y in zip(pixels, baseline)])
    assert mean <= 2.5 and _max_diff(pixels, baseline) <= 24, (mean, _max_diff(pixels, baseline))


def test_a_vae_override_gets_the_chosen_attention(tmp_path):
    from tests.checkpoint_factory import make_vae_file

    save_tiny_model_dir(tmp_path / "models" / "Stable-diffusion" / "tiny", seed=3)
    make_vae_file(tmp_path / "models" / "VAE" / "other.safetensors", seed=5)
    paths = Paths(data_dir=tmp_path)
    registry = ModelRegistry(paths, ModelOptions(device="cpu", attention=speed.CLASSIC), embedded_dir=None)
    model = registry.get(vae="other.safetensors")
    assert model.vae_name and speed.current_attention(model.vae) == speed.CLASSIC


def test_flags_choose_the_attention():
    assert speed.attention_from_flags(parse_args([])) == speed.SDPA
    assert speed.attention_from_flags(parse_args(["--opt-sdp-attention"])) == speed.SDPA
    assert speed.attention_from_flags(parse_args(["--xformers"])) == speed.SDPA
    assert speed.attention_from_flags(parse_args(["--opt-sdp-no-mem-attention"])) == speed.SDPA_NO_MEM
    assert speed.attention_from_flags(parse_args(["--opt-sdp-attention", "--disable-opt-split-attention"])) == speed.CLASSIC
    assert speed.attention_from_flags(argparse.Namespace()) == speed.SDPA  # namespaces built without the flags
    assert parse_args(["--opt-channelslast", "--precision", "bf16"]).opt_channelslast
    with pytest.raises(ValueError, match="attention must be one of"):
        ModelOptions(attention="xformers")


def test_describe_names_precision_and_attention():
    line = speed.describe(ModelOptions(device="cpu", precision="bf16", attention=speed.SDPA_NO_MEM, channels_last=True))
    assert line.startswith("device cpu, UNet/text encoders bfloat16, VAE bfloat16")
    assert "attention sdpa-no-mem (--opt-sdp-no-mem-attention)" in line and "channels_last on" in line


def test_start_up_log_and_cmd_flags_report_the_attention(data_dir, caplog):
    from modules.api.service import ApiService
    from modules.app_factory import create_context

    args = parse_args(["--data-dir", str(data_dir), "--use-cpu", "--nowebui", "--disable-all-extensions",
                       "--opt-sdp-no-mem-attention", "--opt-channelslast"])
    with caplog.at_level(logging.INFO, logger="modules.app_factory"):
        ctx = create_context(args)
    try:
        assert any("attention sdpa-no-mem" in r.getMessage() and "channels_last on" in r.getMessage()
                   for r in caplog.records)
        flags = ApiService(ctx).cmd_flags()
        assert flags["attention"] == "sdpa-no-mem" and flags["opt_sdp_no_mem_attention"] is True
        assert flags["opt_channelslast"] is True
        model = ctx.registry.get()
        assert speed.current_attention(model.unet) == speed.SDPA_NO_MEM
        assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    finally:
        ctx.queue.shutdown()
