"""Seamless tiling (A1111's "Tiling"): circular padding on per-job copies of the UNet and VAE,
through the real engine on the tiny model. The shared model is never changed."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from modules.extensions.hooks import JobExtension
from modules.extensions.runner import ExtensionSet
from modules.generation.request import GenerationRequest
from modules.infotext import request_fields_from_infotext
from modules.paths import Paths
from modules.processing import tiling
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.tiny_model import FixedProvider, tiny_loaded_model

LATENT_SHIFT = 4  # latent pixels; a multiple of the tiny UNet's one downsampling (2)


class Probe(JobExtension):
    """Looks at the job's model and the shared one while the job runs."""

    name = "tiling-probe"
    always_on = True

    def __init__(self, shared) -> None:
        self.shared = shared
        self.seen: list[dict] = []

    def unet_step(self, job, batch, step, args):
        if step.index == 0:
            self.seen.append({"job_unet": tiling.padding_modes(job.model.unet),
                              "job_vae": tiling.padding_modes(job.model.vae),
                              "shared_unet": tiling.padding_modes(self.shared.pipe.unet),
                              "shared_vae": tiling.padding_modes(self.shared.pipe.vae)})
        return None

    def after_batch(self, job, batch, args):
        self.seen[-1].update(latents=batch.latents.clone(), model=job.model)


@pytest.fixture(scope="module")
def shared():
    return tiny_loaded_model(seed=0)


@pytest.fixture()
def probe(shared):
    return Probe(shared)


@pytest.fixture()
def engine(shared, probe, tmp_path):
    return Engine(FixedProvider(shared), SettingsStore(None), Paths(data_dir=tmp_path),
                  extensions=ExtensionSet([probe]))


def request(**fields) -> GenerationRequest:
    base = dict(prompt="a red circle", seed=7, steps=3, sampler_name="Euler", save_images=False)
    return GenerationRequest(**{**base, **fields})


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(latents / vae.config.scaling_factor).sample


def test_tiled_copy_shares_every_tensor_and_leaves_the_model_alone(shared):
    model = tiling.tiled(shared)
    assert tiling.padding_modes(model.unet) == {"circular"}
    assert tiling.padding_modes(model.vae) == {"circular"}
    assert tiling.padding_modes(shared.unet) == {"zeros"} and tiling.padding_modes(shared.vae) == {"zeros"}
    assert model.unet is not shared.unet and model.vae is not shared.vae
    for copy_, original in ((model.unet, shared.unet), (model.vae, shared.vae)):
        pairs = list(zip(copy_.state_dict(keep_vars=True).values(), original.state_dict(keep_vars=True).values()))
        assert pairs and all(a is b for a, b in pairs)  # no weight copied
    # what is cached per pipeline (text encoder conditioning, LoRA's layer map) is reused
    assert model.pipe is shared.pipe and model.pipe.text_encoder is shared.pipe.text_encoder


def test_the_tiled_decoder_wraps_around(shared):
    """The left and right edges continue each other: moving the latents by k pixels moves the
    picture by 8k, so the seam between two copies is a part the decoder draws like any other."""
    model = tiling.tiled(shared)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    rolled = torch.roll(z, LATENT_SHIFT, dims=-1)
    picture = decode(model.vae, z)
    assert torch.allclose(decode(model.vae, rolled), torch.roll(picture, 8 * LATENT_SHIFT, dims=-1), atol=1e-4)
    down = torch.roll(z, LATENT_SHIFT, dims=-2)  # top and bottom too
    assert torch.allclose(decode(model.vae, down), torch.roll(picture, 8 * LATENT_SHIFT, dims=-2), atol=1e-4)
    plain = decode(shared.vae, z)  # zero padding: the edges do not meet
    assert not torch.allclose(decode(shared.vae, rolled), torch.roll(plain, 8 * LATENT_SHIFT, dims=-1), atol=1e-2)


def test_the_tiled_unet_wraps_around(shared):
    model = tiling.tiled(shared)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model.unet(x, 500, encoder_hidden_states=text).sample
        moved = model.unet(torch.roll(x, LATENT_SHIFT, dims=-1), 500, encoder_hidden_states=text).sample
        plain = shared.unet(x, 500, encoder_hidden_states=text).sample
        plain_moved = shared.unet(torch.roll(x, LATENT_SHIFT, dims=-1), 500, encoder_hidden_states=text).sample
    assert torch.allclose(moved, torch.roll(out, LATENT_SHIFT, dims=-1), atol=1e-4)
    assert not torch.allclose(plain_moved, torch.roll(plain, LATENT_SHIFT, dims=-1), atol=1e-2)


def test_a_tiled_job_makes_a_seamless_picture(engine, probe, shared):
    result = engine.generate(request(tiling=True))
    seen = probe.seen[-1]
    model, latents = seen["model"], seen["latents"]
    assert isinstance(model, tiling.TiledModel)
    # the picture laid twice side by side, seen across the seam, is a picture the job's decoder draws
    image = decode(model.vae, latents)
    across_seam = decode(model.vae, torch.roll(latents, LATENT_SHIFT, dims=-1))
    assert torch.allclose(across_seam, torch.roll(image, 8 * LATENT_SHIFT, dims=-1), atol=1e-4)
    expected = ((image[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.int16)
    assert np.abs(px(result.images[0]) - expected).max() <= 1  # that decoder made the result
    assert "Tiling: True" in result.infotexts[0]


def test_the_shared_model_is_untouched_during_and_after_the_job(engine, probe, shared):
    engine.generate(request(tiling=True))
    during = probe.seen[-1]
    assert during["job_unet"] == {"circular"} and during["job_vae"] == {"circular"}
    assert during["shared_unet"] == {"zeros"} and during["shared_vae"] == {"zeros"}
    assert tiling.padding_modes(shared.unet) == {"zeros"} and tiling.padding_modes(shared.vae) == {"zeros"}


def test_tiled_and_plain_jobs_alternate(engine, probe):
    plain = engine.generate(request())
    tiled = engine.generate(request(tiling=True))
    plain_again = engine.generate(request())
    tiled_again = engine.generate(request(tiling=True))
    assert np.array_equal(px(plain.images[0]), px(plain_again.images[0]))
    assert np.array_equal(px(tiled.images[0]), px(tiled_again.images[0]))
    assert not np.array_equal(px(plain.images[0]), px(tiled.images[0]))
    assert [s["job_unet"] for s in probe.seen] == [{"zeros"}, {"circular"}, {"zeros"}, {"circular"}]
    assert "Tiling" not in plain.infotexts[0]


def test_the_job_copy_is_freed_and_the_encoder_cache_is_shared(engine, probe, shared):
    engine.generate(request())
    engine.generate(request(tiling=True))
    copy_ref = weakref.ref(probe.seen[-1]["model"].unet)
    probe.seen.clear()
    gc.collect()
    assert copy_ref() is None  # nothing keeps the job's copy alive
    assert len(engine._encoders) == 1  # one prompt encoder for the pipeline, tiled or not


def test_tiling_infotext_round_trip():
    text = "a cat\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 7, Size: 64x64, Tiling: True"
    assert request_fields_from_infotext(text)["tiling"] is True
    assert request_fields_from_infotext(text.replace(", Tiling: True", ""))["tiling"] is False
