"""Hires fix on the tiny real model: target sizes, both passes' steps and progress, interrupt, the
latent path without a VAE round trip, and infotext that pastes back into the same pixels."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from modules.generation.request import GenerationRequest, HiresOptions
from modules.infotext import parse_infotext, request_fields_from_infotext
from modules.jobs.control import JobControl
from modules.paths import Paths
from modules.processing import hires
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.tiny_model import FixedProvider, tiny_loaded_model

HAS_UPSCALERS = importlib.util.find_spec("modules.postprocess.upscalers") is not None


@pytest.fixture(scope="module")
def model():
    return tiny_loaded_model(seed=0)


@pytest.fixture()
def engine(model, tmp_path):
    return Engine(FixedProvider(model), SettingsStore(None), Paths(data_dir=tmp_path))


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def request(hr: dict | None = None, **fields) -> GenerationRequest:
    base = dict(prompt="a red circle", negative_prompt="blurry", seed=77, steps=3, sampler_name="Euler a",
                width=64, height=64, denoising_strength=0.5, save_images=False)
    return GenerationRequest(**{**base, **fields}, hires=HiresOptions(**(hr or {})))


class RecordingControl(JobControl):
    """A real JobControl that keeps every reported step and can interrupt at one of them."""

    def __init__(self, interrupt_at: int = 0) -> None:
        super().__init__()
        self.steps: list[tuple[int, int]] = []
        self.started_total = 0
        self.interrupt_at = interrupt_at

    def start(self, batch_count: int, total_steps: int) -> None:
        self.started_total = total_steps
        super().start(batch_count, total_steps)

    def report_step(self, batch_index, step, total_steps, preview=None) -> None:
        self.steps.append((step, total_steps))
        super().report_step(batch_index, step, total_steps, preview)
        if step == self.interrupt_at:
            self.interrupt()


class UNetCalls:
    def __init__(self, model) -> None:
        self.count = 0
        self._handle = model.unet.register_forward_hook(self._hook)

    def _hook(self, *args) -> None:
        self.count += 1

    def close(self) -> None:
        self._handle.remove()


# ------------------------------------------------------------------------------- target size rules


@pytest.mark.parametrize("first, options, expected", [
    ((64, 64), dict(scale=2), (128, 128)),
    ((64, 96), dict(scale=1.5), (96, 144)),
    ((512, 512), dict(scale=1.3), (664, 664)),  # int(665.6) = 665 -> a multiple of 8, as A1111's latents
    ((64, 96), dict(resize_x=128), (128, 192)),  # one side 0: keep the aspect ratio
    ((64, 96), dict(resize_y=128), (80, 128)),  # 128 * 64 // 96 = 85 -> 80
    ((64, 96), dict(resize_x=128, resize_y=128), (128, 128)),  # taller: crop top and bottom
    ((96, 64), dict(resize_x=128, resize_y=128), (128, 128)),  # wider: crop the sides
    ((512, 768), dict(resize_x=1024, resize_y=1024, scale=4), (1024, 1024)),  # resize wins over scale
])
def test_target_size_follows_a1111(first, options, expected):
    target = hires.target_size(*first, HiresOptions(**options))
    assert (target.width, target.height) == expected
    assert target.width % 8 == 0 and target.height % 8 == 0


def test_crop_is_centred_like_a1111_truncate():
    target = hires.target_size(64, 96, HiresOptions(resize_x=128, resize_y=128))
    assert (target.upscale_width, target.upscale_height, target.crop_x, target.crop_y) == (128, 192, 0, 8)
    assert target.crop_box() == (0, 32, 128, 160)
    import torch
    latents = torch.arange(24 * 16, dtype=torch.float32).reshape(1, 1, 24, 16)
    cropped = hires.crop_latents(latents, target)
    assert cropped.shape[-2:] == (16, 16) and cropped[0, 0, 0, 0] == latents[0, 0, 4, 0]


def test_target_past_the_size_limit_is_refused_naming_the_fields():
    with pytest.raises(hires.HiresSizeError, match="2048 per side"):
        hires.target_size(1024, 1024, HiresOptions(scale=4))
    assert hires.HiresSizeError.fields == ("hr_scale", "hr_resize_x", "hr_resize_y")


def test_second_pass_steps_follow_a1111_img2img_given_steps():
    assert hires.schedule_steps(0, 20, 0.7) == (28, 20)  # 20 / 0.7 = 28.57 -> a 28-step schedule, 20 run
    assert hires.schedule_steps(10, 20, 0.5) == (20, 10)
    assert hires.schedule_steps(10, 20, 1.0) == (10, 10)
    assert hires.schedule_steps(10, 20, 0.0) == (0, 0)


# ------------------------------------------------------------------------------- the engine


@pytest.mark.parametrize("options, expected", [
    (dict(scale=2), (128, 128)),
    (dict(resize_x=96), (96, 96)),
    (dict(resize_x=128, resize_y=96), (128, 96)),
])
def test_output_is_the_target_size_and_size_stays_the_first_pass(engine, options, expected):
    result = engine.generate(request(options))
    assert result.images[0].size == expected
    assert (result.width, result.height) == (64, 64)  # A1111's Size / info width: the first pass
    assert "Size: 64x64" in result.infotexts[0]
    assert px(result.images[0]).std() > 0


def test_latent_upscale_hands_latents_over_without_the_vae_encoder(engine, model, monkeypatch):
    calls = {"encode": 0, "decode": 0}
    encode, decode = model.vae.encode, model.vae.decode

    def counted_encode(*a, **k):
        calls["encode"] += 1
        return encode(*a, **k)

    def counted_decode(*a, **k):
        calls["decode"] += 1
        return decode(*a, **k)

    monkeypatch.setattr(model.vae, "encode", counted_encode)
    monkeypatch.setattr(model.vae, "decode", counted_decode)
    result = engine.generate(request(dict(upscaler="Latent (bicubic antialiased)")))
    assert result.images[0].size == (128, 128)
    assert calls == {"encode": 0, "decode": 1}  # one decode: the final picture only


def test_progress_counts_both_passes(engine, model):
    control = RecordingControl()
    unet = UNetCalls(model)
    try:
        engine.generate(request(dict(second_pass_steps=4)), control)
    finally:
        unet.close()
    assert control.started_total == 7
    assert control.steps == [(1, 7), (2, 7), (3, 7), (4, 7), (5, 7), (6, 7), (7, 7)]
    assert unet.count == 7  # 3 first-pass steps + exactly the 4 hires steps (CFG in one call)
    assert control.snapshot().fraction == 1.0


def test_hires_steps_zero_means_the_first_pass_steps(engine, model):
    control = RecordingControl()
    engine.generate(request(dict(second_pass_steps=0), steps=4, denoising_strength=0.3), control)
    assert control.started_total == 8 and control.steps[-1] == (8, 8)


def test_interrupt_during_the_second_pass_keeps_the_hires_image(engine):
    control = RecordingControl(interrupt_at=5)  # the second of four hires steps
    result = engine.generate(request(dict(second_pass_steps=4)), control)
    assert result.interrupted
    assert result.images[0].size == (128, 128)
    assert any("interrupted at step 2/4 of the hires pass" in w for w in result.warnings)
    assert control.steps[-1] == (5, 7)


def test_skip_during_the_second_pass_ends_that_batch_only(engine):
    class SkipOnce(RecordingControl):
        def report_step(self, batch_index, step, total_steps, preview=None) -> None:
            self.steps.append((step, total_steps))
            JobControl.report_step(self, batch_index, step, total_steps, preview)
            if batch_index == 0 and step == 5:
                self.skip()

    control = SkipOnce()
    result = engine.generate(request(dict(second_pass_steps=4), batch_count=2), control)
    assert not result.interrupted
    assert [img.size for img in result.images] == [(128, 128), (128, 128)]
    assert any("batch 1 skipped at step 2/4 of the hires pass" in w for w in result.warnings)
    assert control.steps[:5] == [(1, 7), (2, 7), (3, 7), (4, 7), (5, 7)]
    assert control.steps[5:] == [(1, 7), (2, 7), (3, 7), (4, 7), (5, 7), (6, 7), (7, 7)]  # batch 2: both passes


def test_interrupt_during_the_first_pass_skips_the_second(engine):
    control = RecordingControl(interrupt_at=2)
    result = engine.generate(request(dict(second_pass_steps=4)), control)
    assert result.interrupted
    assert result.images[0].size == (64, 64)
    assert any("hires fix not run" in w for w in result.warnings)
    assert max(step for step, _ in control.steps) == 2


def test_denoising_zero_returns_the_upscaled_first_pass(engine, model):
    control = RecordingControl()
    unet = UNetCalls(model)
    try:
        result = engine.generate(request(dict(scale=2), denoising_strength=0.0), control)
    finally:
        unet.close()
    assert result.images[0].size == (128, 128)
    assert unet.count == 3 and control.started_total == 3  # the second pass runs no step
    assert "Denoising strength: 0" in result.infotexts[0]


def test_second_pass_changes_with_its_own_settings(engine):
    base = engine.generate(request(dict(scale=2)))
    again = engine.generate(request(dict(scale=2)))
    assert np.array_equal(px(base.images[0]), px(again.images[0]))
    for options in (dict(scale=2, cfg_scale=2.0), dict(scale=2, prompt="a blue square"),
                    dict(scale=2, sampler_name="DPM++ 2M", scheduler="Karras"), dict(scale=2, second_pass_steps=5)):
        other = engine.generate(request(options))
        assert not np.array_equal(px(base.images[0]), px(other.images[0])), options


# ------------------------------------------------------------------------------- infotext


def test_infotext_has_a1111_hires_keys_in_order(engine):
    text = engine.generate(request(dict(scale=2, second_pass_steps=4, upscaler="Latent (nearest)"))).infotexts[0]
    params = parse_infotext(text).params
    keys = list(params)
    assert params["Denoising strength"] == "0.5"
    assert params["Hires upscale"] == "2" and params["Hires steps"] == "4"
    assert params["Hires upscaler"] == "Latent (nearest)"
    assert keys.index("Denoising strength") < keys.index("Hires upscale") < keys.index("Hires steps") \
        < keys.index("Hires upscaler")
    # the same as the first pass: not written
    for key in ("Hires sampler", "Hires prompt", "Hires negative prompt", "Hires schedule type", "Hires CFG Scale",
                "Hires resize"):
        assert key not in params


def test_plain_txt2img_infotext_has_no_hires_keys(engine):
    plain = request().model_copy(update={"hires": None})
    text = engine.generate(plain).infotexts[0]
    assert "Hires" not in text and "Denoising strength" not in text
    assert "hires" not in request_fields_from_infotext(text)


def test_infotext_pasted_back_regenerates_identical_pixels(engine):
    original = request(dict(resize_x=96, resize_y=128, second_pass_steps=2, upscaler="Latent (bicubic)",
                            sampler_name="DPM++ 2M", scheduler="Karras", prompt="a red circle, sharp",
                            negative_prompt="noise", cfg_scale=4.5), denoising_strength=0.6)
    first = engine.generate(original)
    text = first.infotexts[0]
    params = parse_infotext(text).params
    assert params["Hires resize"] == "96x128" and params["Hires sampler"] == "DPM++ 2M"
    assert params["Hires schedule type"] == "Karras" and params["Hires prompt"] == "a red circle, sharp"
    assert params["Hires negative prompt"] == "noise" and params["Hires CFG Scale"] == "4.5"

    fields = request_fields_from_infotext(text, strict=True)
    hr = fields.pop("hires")
    fields.pop("checkpoint", None)
    pasted = GenerationRequest(**fields, hires=HiresOptions(**hr), save_images=False)
    again = engine.generate(pasted)
    assert again.images[0].size == first.images[0].size == (96, 128)
    assert np.array_equal(px(again.images[0]), px(first.images[0]))
    assert again.infotexts[0] == text


@pytest.mark.skipif(not HAS_UPSCALERS, reason="modules/postprocess/upscalers.py is not there yet")
def test_lanczos_upscaler_decodes_upscales_and_encodes(engine, model, monkeypatch):
    calls = {"encode": 0}
    encode = model.vae.encode

    def counted_encode(*a, **k):
        calls["encode"] += 1
        return encode(*a, **k)

    monkeypatch.setattr(model.vae, "encode", counted_encode)
    result = engine.generate(request(dict(scale=2, upscaler="Lanczos")))
    assert result.images[0].size == (128, 128) and calls["encode"] == 1
    assert "Hires upscaler: Lanczos" in result.infotexts[0]


@pytest.mark.skipif(not HAS_UPSCALERS, reason="modules/postprocess/upscalers.py is not there yet")
def test_lanczos_at_denoising_zero_is_the_lanczos_resized_first_pass(engine):
    plain = engine.generate(request().model_copy(update={"hires": None}))
    result = engine.generate(request(dict(scale=2, upscaler="Lanczos"), denoising_strength=0.0))
    expected = plain.images[0].resize((128, 128), Image.LANCZOS)
    assert np.array_equal(px(result.images[0]), px(expected))


@pytest.mark.skipif(not HAS_UPSCALERS, reason="modules/postprocess/upscalers.py is not there yet")
def test_unknown_upscaler_fails_before_sampling(engine):
    from modules.postprocess.upscalers import UnknownUpscalerError

    with pytest.raises(UnknownUpscalerError):
        engine.generate(request(dict(upscaler="No Such Upscaler")))


def test_queue_admission_checks_the_hires_target_size():
    from modules.processing.limits import SizeLimitError, request_size_check

    check = request_size_check(lambda: 100 * 100, "cpu")
    check(request(dict(scale=1.5)))  # 96x96 fits
    with pytest.raises(SizeLimitError, match="128x128"):
        check(request(dict(scale=2)))  # 64x64 fits, its 128x128 second pass does not


def test_unet_step_hooks_reach_both_passes(model, tmp_path):
    """ControlNet-style extensions add UNet inputs in the second pass too, at its size."""
    from modules.extensions.hooks import JobExtension
    from modules.extensions.runner import ExtensionSet

    class SeesSteps(JobExtension):
        name = "sees-steps"
        always_on = True

        def __init__(self) -> None:
            self.seen: list[tuple[int, int, tuple[int, ...]]] = []

        def unet_step(self, job, batch, step, args) -> None:
            self.seen.append((step.index, step.total, tuple(step.sample.shape[-2:])))

    ext = SeesSteps()
    engine = Engine(FixedProvider(model), SettingsStore(None), Paths(data_dir=tmp_path), extensions=ExtensionSet([ext]))
    engine.generate(request(dict(second_pass_steps=2)))
    factor = model.vae_scale_factor
    small, big = (64 // factor,) * 2, (128 // factor,) * 2
    assert [(i, shape) for i, _, shape in ext.seen] == [(0, small), (1, small), (2, small), (0, big), (1, big)]
