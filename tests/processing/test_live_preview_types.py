"""Live previews follow `show_progress_type` (issue 18), on real components on the CPU.

"Approx cheap" is the linear latent->RGB map and nothing else (pixels checked against the map
applied by hand), "Full" is a real VAE decode of the same latents, "Approx NN" and "TAESD" (no
weights shipped) draw the "Approx cheap" picture. A job reads the setting from its own options.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from modules.generation.request import GenerationRequest
from modules.jobs.control import JobControl
from modules.models.loaded import LoadedModel
from modules.paths import Paths
from modules.processing import latents as latent_ops
from modules.processing.engine import Engine
from modules.settings import Options, SettingsStore
from tests.tiny_model import FixedProvider, tiny_components, tiny_loaded_model

SD1_MAP = np.array(latent_ops.SD1_LATENT_RGB, dtype=np.float64)  # [latent channel, rgb]
SDXL_MAP = np.array(latent_ops.SDXL_LATENT_RGB, dtype=np.float64)


def full_size_vae(seed: int = 0) -> AutoencoderKL:
    """An SD-shaped VAE (4 latent channels, factor 8) above SMALL_VAE_PARAMS: previews approximate."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
                        block_out_channels=(64, 128, 256, 256), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64).eval()
    assert sum(p.numel() for p in vae.parameters()) >= latent_ops.SMALL_VAE_PARAMS
    return vae


@pytest.fixture(scope="module")
def vae() -> AutoencoderKL:
    return full_size_vae()


def known_latents() -> torch.Tensor:
    """Two images of 4x3x5 latents with values on a 1/8 grid in [-2, 2] (the first is previewed)."""
    values = (torch.arange(2 * 4 * 3 * 5, dtype=torch.float32) * 7 % 33 - 16) / 8
    return values.reshape(2, 4, 3, 5)


def by_hand(latents: torch.Tensor, table: np.ndarray) -> np.ndarray:
    """The map as A1111's "Approx cheap" defines it, written out pixel by pixel: each latent pixel's
    RGB is the channel-weighted sum, clamped to [-1, 1], scaled to 0..255 (truncated), and shown
    as an 8x8 block."""
    first = latents[0].double().numpy()
    channels, height, width = first.shape
    out = np.zeros((height * 8, width * 8, 3), dtype=np.uint8)
    for y in range(height):
        for x in range(width):
            for r in range(3):
                value = sum(first[c, y, x] * table[c, r] for c in range(channels))
                value = min(1.0, max(-1.0, value))
                out[y * 8:(y + 1) * 8, x * 8:(x + 1) * 8, r] = int((value + 1) * 127.5)
    return out


def decoder_calls(vae) -> tuple[list[int], object]:
    calls: list[int] = []
    handle = vae.decoder.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    return calls, handle


@pytest.mark.parametrize("is_xl, table", [(False, SD1_MAP), (True, SDXL_MAP)], ids=["sd1", "sdxl"])
def test_approx_cheap_is_the_linear_map_exactly(vae, is_xl, table):
    latents = known_latents()
    calls, handle = decoder_calls(vae)
    try:
        image = latent_ops.latent_preview(vae, latents, family_is_xl=is_xl, kind="Approx cheap")
    finally:
        handle.remove()
    assert calls == []  # no model ran
    assert image.mode == "RGB" and image.size == (5 * 8, 3 * 8)
    expected = by_hand(latents, table)
    assert np.array_equal(np.asarray(image), expected)
    assert len(np.unique(expected.reshape(-1, 3), axis=0)) > 5  # a real picture, not one flat colour


def test_full_is_a_real_vae_decode_of_the_same_latents(vae):
    latents = known_latents()
    image = latent_ops.latent_preview(vae, latents, family_is_xl=False, kind="Full")
    with torch.no_grad():
        decoded = vae.decode(latents[:1] / vae.config.scaling_factor, return_dict=False)[0]
    expected = np.asarray(latent_ops.tensor_to_pil(decoded)[0])
    assert image.size == (5 * 8, 3 * 8)
    assert np.array_equal(np.asarray(image), expected)
    cheap = latent_ops.latent_preview(vae, latents, family_is_xl=False, kind="Approx cheap")
    assert not np.array_equal(np.asarray(cheap), expected)


@pytest.mark.parametrize("kind", ["Approx NN", "TAESD"])
def test_kinds_without_shipped_weights_draw_approx_cheap(vae, kind):
    latents = known_latents()
    for is_xl in (False, True):
        cheap = latent_ops.latent_preview(vae, latents, family_is_xl=is_xl, kind="Approx cheap")
        other = latent_ops.latent_preview(vae, latents, family_is_xl=is_xl, kind=kind)
        assert np.array_equal(np.asarray(other), np.asarray(cheap))


def test_a_small_vae_decodes_for_real_whatever_the_kind():
    """The embedded-size VAE: a decode costs no more than the map, so every kind is a decode."""
    small = tiny_loaded_model(seed=3).vae
    latents = known_latents()
    full = np.asarray(latent_ops.latent_preview(small, latents, False, "Full"))
    for kind in ("Approx cheap", "Approx NN", "TAESD"):
        assert np.array_equal(np.asarray(latent_ops.latent_preview(small, latents, False, kind)), full)


def test_full_preview_honours_vae_tiling_and_leaves_the_vae_as_it_was(vae):
    latents = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(1))
    sizes = vae.tile_sample_min_size, vae.tile_latent_min_size
    vae.tile_sample_min_size, vae.tile_latent_min_size = 32, 4  # tiles much smaller than the image
    try:
        plain = np.asarray(latent_ops.latent_preview(vae, latents, False, "Full"))
        tiled = np.asarray(latent_ops.latent_preview(vae, latents, False, "Full", tiling=True))
    finally:
        vae.tile_sample_min_size, vae.tile_latent_min_size = sizes
    assert tiled.shape == plain.shape and not np.array_equal(tiled, plain)  # seams blended: other pixels
    assert not vae.use_tiling


# ------------------------------------------------------------------------------ the engine, per job
@pytest.fixture(scope="module")
def big_vae_model() -> LoadedModel:
    """The tiny SD1 model with a full-size VAE, so the preview kind matters."""
    components = {**tiny_components(seed=0), "vae": full_size_vae(seed=1)}
    pipe = StableDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return dataclasses.replace(tiny_loaded_model(seed=0), pipe=pipe)


def run_job(model: LoadedModel, tmp_path, kind: str) -> tuple[list, list[int]]:
    """A 4-step job with a preview every 2 steps; (preview images seen, decoder batch sizes)."""
    engine = Engine(FixedProvider(model), SettingsStore(None, Options(show_progress_type=kind)),
                    Paths(data_dir=tmp_path))
    control = JobControl(preview_every=2)
    previews = []
    original = control.report_step

    def record(batch_index, step, total, preview=None):
        before = control.snapshot().preview
        original(batch_index, step, total, preview)
        if control.snapshot().preview is not before:
            previews.append(control.snapshot().preview)
    control.report_step = record
    calls, handle = decoder_calls(model.vae)
    try:
        engine.generate(GenerationRequest(prompt="a red circle", seed=5, steps=4, sampler_name="Euler",
                                          width=64, height=64, save_images=False), control)
    finally:
        handle.remove()
    return previews, calls


def test_a_job_draws_previews_as_its_settings_say(big_vae_model, tmp_path):
    cheap, cheap_calls = run_job(big_vae_model, tmp_path, "Approx cheap")
    assert len(cheap) == 2 and cheap_calls == [1]  # two previews, one decode: the result
    assert all(p.size == (64, 64) for p in cheap)
    nn, nn_calls = run_job(big_vae_model, tmp_path, "Approx NN")  # A1111's default: drawn cheaply
    assert nn_calls == [1]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(nn, cheap))
    full, full_calls = run_job(big_vae_model, tmp_path, "Full")
    assert len(full) == 2 and full_calls == [1, 1, 1]  # each preview is a decode of one image
    assert all(p.size == (64, 64) for p in full)
    assert not np.array_equal(np.asarray(full[-1]), np.asarray(cheap[-1]))


def test_the_setting_is_typed_with_a1111s_default():
    assert Options().show_progress_type == "Approx NN"
    assert Options().updated({"show_progress_type": "Full"}).show_progress_type == "Full"
    with pytest.raises(ValueError, match="show_progress_type"):
        Options().updated({"show_progress_type": "Approx fancy"})
