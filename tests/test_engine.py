"""The engine end to end on tiny real diffusers components (no mocks): seeds, samplers, modes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from modules.infotext import read_infotext, request_fields_from_infotext
from modules.jobs.control import JobControl
from modules.paths import Paths
from modules.processing import samplers
from modules.processing.engine import Engine
from modules.generation.request import GenerationRequest, InpaintArea, InpaintOptions, MaskedContent, Mode, ResizeMode, RngSource
from modules.settings import Options, SettingsStore
from tests.tiny_model import FixedProvider, tiny_loaded_model


@pytest.fixture(scope="module")
def models():
    return FixedProvider(tiny_loaded_model(seed=0), tiny_loaded_model(seed=5, in_channels=9, name="tiny-inpaint"))


@pytest.fixture()
def engine(models, tmp_path):
    return Engine(models, SettingsStore(None), Paths(data_dir=tmp_path))


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def txt2img(**fields) -> GenerationRequest:
    base = dict(prompt="a red circle on a blue background", seed=1234, steps=3, sampler_name="Euler a",
                save_images=False)
    return GenerationRequest(**{**base, **fields})


def picture(color=(200, 30, 30), size=64) -> Image.Image:
    image = Image.new("RGB", (size, size), (20, 40, 200))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=color)
    return image


def centre_mask(size=64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 40, 40), fill=255)
    return mask


@pytest.mark.parametrize("sampler", samplers.SAMPLER_NAMES)
def test_every_sampler_runs_and_reproduces(engine, sampler):
    first = engine.generate(txt2img(sampler_name=sampler))
    again = engine.generate(txt2img(sampler_name=sampler))
    assert first.images[0].size == (64, 64)
    assert px(first.images[0]).std() > 0
    assert np.array_equal(px(first.images[0]), px(again.images[0]))
    assert first.sampler_name == sampler


@pytest.mark.parametrize("schedule", ["Karras", "Exponential", "SGM Uniform", "Beta", "Uniform"])
def test_schedule_types_change_the_picture(engine, schedule):
    auto = engine.generate(txt2img(sampler_name="DPM++ 2M", scheduler="Automatic"))
    other = engine.generate(txt2img(sampler_name="DPM++ 2M", scheduler=schedule))
    assert auto.scheduler == "Karras"
    assert other.scheduler == schedule
    if schedule != "Karras":
        assert not np.array_equal(px(auto.images[0]), px(other.images[0]))


def test_old_combined_sampler_alias(engine):
    via_alias = engine.generate(txt2img(sampler_name="DPM++ 2M Karras", scheduler="Automatic"))
    explicit = engine.generate(txt2img(sampler_name="DPM++ 2M", scheduler="Karras"))
    assert np.array_equal(px(via_alias.images[0]), px(explicit.images[0]))
    assert engine.generate(txt2img(sampler_name="k_euler_a")).sampler_name == "Euler a"


def test_unknown_sampler_lists_valid_names(engine):
    with pytest.raises(samplers.UnknownSamplerError) as err:
        engine.generate(txt2img(sampler_name="Eulr b"))
    assert "Euler a" in str(err.value) and "DPM++ 2M" in str(err.value)


def test_different_seeds_differ_and_random_seed_is_recorded(engine):
    a = engine.generate(txt2img(seed=1))
    b = engine.generate(txt2img(seed=2))
    assert not np.array_equal(px(a.images[0]), px(b.images[0]))
    rnd = engine.generate(txt2img(seed=-1))
    assert 0 <= rnd.seeds[0] < 2**32
    replay = engine.generate(txt2img(seed=rnd.seeds[0]))
    assert np.array_equal(px(rnd.images[0]), px(replay.images[0]))


@pytest.fixture()
def per_image_engine(models, tmp_path):
    """The `batch_per_image` setting on: one UNet call and one VAE decode per image of a batch."""
    return Engine(models, SettingsStore(None, Options(batch_per_image=True)), Paths(data_dir=tmp_path))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DDIM", "DPM++ SDE"])
def test_batch_image_equals_single_job_with_seed_plus_i(per_image_engine, sampler):
    engine = per_image_engine
    batch = engine.generate(txt2img(sampler_name=sampler, seed=100, batch_size=2, batch_count=2))
    assert batch.seeds == [100, 101, 102, 103]
    for i, image in enumerate(batch.images):
        single = engine.generate(txt2img(sampler_name=sampler, seed=100 + i))
        assert np.array_equal(px(image), px(single.images[0])), f"image {i}"


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DDIM", "DPM++ SDE"])
def test_batched_default_is_close_to_single_jobs(engine, sampler):
    """Batched kernels round differently, so the default is close to, not equal to, the lone job."""
    batch = engine.generate(txt2img(sampler_name=sampler, seed=100, batch_size=3))
    assert batch.seeds == [100, 101, 102]
    for i, image in enumerate(batch.images):
        single = engine.generate(txt2img(sampler_name=sampler, seed=100 + i))
        assert np.abs(px(image) - px(single.images[0])).max() <= 2, f"image {i}"


def _count_calls(module, calls: list[int]):
    """A forward hook on the real module that records the batch size of each call."""
    return module.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))


@pytest.mark.parametrize("per_image", [False, True])
def test_batch_makes_one_unet_call_per_step_and_one_decode(models, tmp_path, per_image):
    model = models.default
    engine = Engine(models, SettingsStore(None, Options(batch_per_image=per_image)), Paths(data_dir=tmp_path))
    unet_calls, decode_calls = [], []
    hooks = [_count_calls(model.pipe.unet, unet_calls), _count_calls(model.pipe.vae.decoder, decode_calls)]
    try:
        result = engine.generate(txt2img(sampler_name="Euler", steps=3, batch_size=3))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(result.images) == 3
    if per_image:  # each image's uncond+cond pair, then each image's decode
        assert unet_calls == [2] * 9 and decode_calls == [1, 1, 1]
    else:  # uncond+cond of the whole batch in one call per step, one decode
        assert unet_calls == [6] * 3 and decode_calls == [3]


def test_variation_seed(engine):
    base = engine.generate(txt2img(seed=7))
    zero = engine.generate(txt2img(seed=7, subseed=99, subseed_strength=0.0))
    some = engine.generate(txt2img(seed=7, subseed=99, subseed_strength=0.5))
    assert np.array_equal(px(base.images[0]), px(zero.images[0]))
    assert not np.array_equal(px(base.images[0]), px(some.images[0]))
    assert some.subseeds == [99]
    # slerp(1) is the subseed's noise; a deterministic sampler draws nothing else from the seed
    full = engine.generate(txt2img(seed=7, subseed=99, subseed_strength=1.0, sampler_name="Euler"))
    other = engine.generate(txt2img(seed=99, sampler_name="Euler"))
    assert np.abs(px(full.images[0]) - px(other.images[0])).max() <= 1


def test_resize_seed_from_same_size_is_identity_and_other_size_changes(engine):
    base = engine.generate(txt2img(seed=3))
    same = engine.generate(txt2img(seed=3, seed_resize_from_w=64, seed_resize_from_h=64))
    other = engine.generate(txt2img(seed=3, seed_resize_from_w=32, seed_resize_from_h=32))
    assert np.array_equal(px(base.images[0]), px(same.images[0]))
    assert not np.array_equal(px(base.images[0]), px(other.images[0]))


def test_rng_source_cpu_reproduces(engine):
    a = engine.generate(txt2img(rng_source=RngSource.CPU))
    b = engine.generate(txt2img(rng_source=RngSource.CPU))
    assert np.array_equal(px(a.images[0]), px(b.images[0]))


def test_sizes_must_be_multiples_of_8():
    for bad in (65, 60, 8, 4096):
        with pytest.raises(ValidationError, match="multiple of 8"):
            txt2img(width=bad)


def test_non_square_size_and_clip_skip(engine):
    result = engine.generate(txt2img(width=96, height=64))
    assert result.images[0].size == (96, 64)
    skip1 = engine.generate(txt2img(clip_skip=1))
    skip2 = engine.generate(txt2img(clip_skip=2))
    assert not np.array_equal(px(skip1.images[0]), px(skip2.images[0]))


def test_prompt_editing_and_cfg_change_the_result(engine):
    plain = engine.generate(txt2img(prompt="cat", steps=4))
    edited = engine.generate(txt2img(prompt="[cat:dog:0.5]", steps=4))
    dog = engine.generate(txt2img(prompt="dog", steps=4))
    assert not np.array_equal(px(plain.images[0]), px(edited.images[0]))
    assert not np.array_equal(px(dog.images[0]), px(edited.images[0]))
    cfg1 = engine.generate(txt2img(cfg_scale=1.0))
    assert not np.array_equal(px(cfg1.images[0]), px(plain.images[0]))


def test_long_prompts_and_negative_prompts_are_not_truncated(engine):
    long = ", ".join(["a red circle"] * 40)
    a = engine.generate(txt2img(prompt=long))
    b = engine.generate(txt2img(prompt=long + ", blue"))
    assert not np.array_equal(px(a.images[0]), px(b.images[0]))
    c = engine.generate(txt2img(prompt="x", negative_prompt=long))
    assert c.images


def test_img2img_strength_zero_returns_the_input(engine):
    init = picture()
    result = engine.generate(GenerationRequest(mode=Mode.IMG2IMG, init_images=(init,), denoising_strength=0.0,
                                               steps=3, save_images=False))
    assert np.array_equal(px(result.images[0]), px(init))


def test_img2img_strength_one_ignores_the_input(engine):
    def run(image):
        return engine.generate(GenerationRequest(mode=Mode.IMG2IMG, init_images=(image,), denoising_strength=1.0,
                                                 steps=3, seed=5, sampler_name="Euler", save_images=False))
    assert np.array_equal(px(run(picture()).images[0]), px(run(picture((0, 255, 0))).images[0]))
    low = engine.generate(GenerationRequest(mode=Mode.IMG2IMG, init_images=(picture(),), denoising_strength=0.3,
                                            steps=3, seed=5, save_images=False))
    assert not np.array_equal(px(low.images[0]), px(run(picture()).images[0]))


def marked_gradient(width=128, height=64) -> Image.Image:
    """Red rises left to right (2 per column), green top to bottom (4 per row); a blue 16x16 mark
    sits in the top-left corner. Every mode puts a different part of it at a given pixel."""
    x = np.arange(width)[None, :].repeat(height, 0)
    y = np.arange(height)[:, None].repeat(width, 1)
    rgb = np.stack([x * 2, y * 4, np.zeros_like(x)], axis=-1).astype(np.uint8)
    rgb[:16, :16] = (0, 0, 255)
    return Image.fromarray(rgb)


def test_img2img_resize_modes_place_the_picture_as_a1111(engine):
    """A 128x64 init image into 64x64 at strength 0 (the resized input comes back as it is)."""
    source = marked_gradient()
    out = {}
    for mode in ResizeMode:
        result = engine.generate(GenerationRequest(mode=Mode.IMG2IMG, init_images=(source,), denoising_strength=0.0,
                                                   resize_mode=mode, width=64, height=64, save_images=False))
        assert result.images[0].size == (64, 64)
        out[mode] = px(result.images[0])
    assert set(out) == {ResizeMode.JUST_RESIZE, ResizeMode.CROP_AND_RESIZE, ResizeMode.RESIZE_AND_FILL}

    # just resize: squeezed to half width, all of it kept: the mark is 8x16, red climbs 4 per column
    squeezed = out[ResizeMode.JUST_RESIZE]
    assert tuple(squeezed[8, 3]) == pytest.approx((0, 0, 255), abs=12)
    assert squeezed[8, 12, 2] < 20 and squeezed[24, 3, 2] < 20  # the mark ends at x=8, y=16
    assert squeezed[40, 50, 0] == pytest.approx(4 * 50 + 1, abs=4) and squeezed[40, 50, 1] == pytest.approx(160, abs=4)

    # crop and resize: already 64 high, so exactly the middle 64 columns; the corner mark is cut off
    assert np.array_equal(out[ResizeMode.CROP_AND_RESIZE], px(source)[:, 32:96])

    # resize and fill: the whole picture at 64x32 in the middle, its edge rows stretched over the bands
    filled = out[ResizeMode.RESIZE_AND_FILL]
    assert tuple(filled[16 + 4, 3]) == pytest.approx((0, 0, 255), abs=12)  # the mark, now 8x8
    assert filled[16 + 4, 12, 2] < 20 and filled[16 + 12, 3, 2] < 20
    assert filled[40, 50, 0] == pytest.approx(4 * 50 + 1, abs=4)
    assert filled[40, 50, 1] == pytest.approx(8 * (40 - 16) + 2, abs=6)
    assert all(np.array_equal(filled[row], filled[16]) for row in range(16))
    assert all(np.array_equal(filled[row], filled[47]) for row in range(48, 64))


@pytest.mark.parametrize("content", list(MaskedContent))
@pytest.mark.parametrize("area", list(InpaintArea))
@pytest.mark.parametrize("checkpoint", [None, "tiny-inpaint"])
def test_inpaint_keeps_unmasked_pixels_exactly(engine, content, area, checkpoint):
    init, mask = picture(), centre_mask()
    options = InpaintOptions(mask=mask, mask_blur=2, masked_content=content, inpaint_area=area,
                             only_masked_padding=4)
    result = engine.generate(GenerationRequest(mode=Mode.INPAINT, init_images=(init,), inpaint=options, steps=3,
                                               denoising_strength=0.9, checkpoint=checkpoint, save_images=False))
    out, src = px(result.images[0]), px(init)
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], src[outside])
    inside = np.asarray(mask) == 255
    assert not np.array_equal(out[inside], src[inside])


def test_inverted_mask_repaints_the_outside(engine):
    init, mask = picture(), centre_mask()
    options = InpaintOptions(mask=mask, mask_blur=0, invert_mask=True)
    result = engine.generate(GenerationRequest(mode=Mode.INPAINT, init_images=(init,), inpaint=options, steps=3,
                                               save_images=False))
    inside = np.asarray(mask) == 255
    assert np.array_equal(px(result.images[0])[inside], px(init)[inside])


def test_nine_channel_model_runs_txt2img(engine):
    result = engine.generate(txt2img(checkpoint="tiny-inpaint"))
    assert result.images[0].size == (64, 64)


def test_progress_callback_and_preview(engine):
    control = JobControl(preview_every=1)
    seen = []
    original = control.report_step

    def spy(batch_index, step, total, preview=None):
        original(batch_index, step, total, preview)
        seen.append((step, total, control.snapshot().preview is not None))
    control.report_step = spy
    engine.generate(txt2img(steps=4, sampler_name="Euler"), control)
    assert [s[:2] for s in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(s[2] for s in seen)


def test_interrupt_returns_what_is_finished(engine):
    control = JobControl()
    original = control.report_step

    def interrupt_after_first_batch(batch_index, step, total, preview=None):
        original(batch_index, step, total, preview)
        if batch_index == 1 and step == 1:
            control.interrupt()
    control.report_step = interrupt_after_first_batch
    result = engine.generate(txt2img(batch_count=3, steps=3), control)
    assert result.interrupted
    assert len(result.images) == 2  # the first batch, plus the one stopped early
    assert any("interrupted" in w for w in result.warnings)


def test_skip_ends_only_the_current_batch(engine):
    control = JobControl()
    original = control.report_step

    def skip_first(batch_index, step, total, preview=None):
        original(batch_index, step, total, preview)
        if batch_index == 0 and step == 1:
            control.skip()
    control.report_step = skip_first
    result = engine.generate(txt2img(batch_count=2, steps=3), control)
    assert not result.interrupted
    assert len(result.images) == 2
    full = engine.generate(txt2img(seed=result.seeds[1], steps=3))
    assert np.array_equal(px(result.images[1]), px(full.images[0]))


def test_saved_outputs_carry_infotext_that_round_trips(models, tmp_path):
    engine = Engine(models, SettingsStore(None), Paths(data_dir=tmp_path))
    request = txt2img(seed=42, batch_size=2, save_images=True, sampler_name="DPM++ 2M", scheduler="Karras",
                      negative_prompt="blurry, (ugly:1.2)", cfg_scale=6.5)
    result = engine.generate(request)
    assert len(result.saved_paths) == 2 and result.grid_path
    saved = Image.open(result.saved_paths[1])
    text = read_infotext(saved)
    assert text == result.infotexts[1]
    assert "Seed: 43" in text and "Model: tiny" in text
    fields = request_fields_from_infotext(text)
    assert fields["seed"] == 43 and fields["cfg_scale"] == 6.5 and fields["negative_prompt"] == request.negative_prompt
    assert fields["sampler_name"] == "DPM++ 2M" and fields["scheduler"] == "Karras"
    assert "txt2img-images" in result.saved_paths[0] and "txt2img-grids" in result.grid_path


def test_saved_file_names_come_from_each_images_params(models, tmp_path):
    # Pattern tokens read the structured record the infotext is rendered from, image by image.
    options = Options(samples_filename_pattern="[seed]-[sampler]-[steps]-[cfg]-[model_name]", save_to_dirs=False)
    engine = Engine(models, SettingsStore(None, options), Paths(data_dir=tmp_path))
    result = engine.generate(txt2img(seed=42, batch_size=2, steps=3, save_images=True, sampler_name="Euler a",
                                     cfg_scale=6.5))
    names = [Path(p).name for p in result.saved_paths]
    assert names == ["00000-42-Euler a-3-6.5-tiny.png", "00001-43-Euler a-3-6.5-tiny.png"]
    assert Path(result.grid_path).name == "grid-0000.png"


def test_concurrent_engines_share_nothing(models, tmp_path):
    """Two engines (each with its own provider and settings) run jobs at the same time, on a model
    both share and on one each, with the same samplers at different step counts and batch sizes;
    every image equals the one the same request gives when run alone."""
    other = FixedProvider(models.default, tiny_loaded_model(seed=3, name="tiny-3"))
    engine_a = Engine(models, SettingsStore(None), Paths(data_dir=tmp_path / "a"))
    engine_b = Engine(other, SettingsStore(None), Paths(data_dir=tmp_path / "b"))
    jobs = {
        "a": (engine_a, [txt2img(seed=11, sampler_name="Euler a", steps=4, batch_size=2),
                         txt2img(seed=12, sampler_name="DPM++ 2M", steps=3)]),
        "b": (engine_b, [txt2img(seed=21, sampler_name="DPM++ 2M", steps=6),
                         txt2img(seed=22, sampler_name="Euler a", steps=5, checkpoint="tiny-3", batch_size=2)]),
    }
    expected = {name: [[px(im) for im in engine.generate(r).images] for r in requests]
                for name, (engine, requests) in jobs.items()}
    got: dict[str, list] = {name: [] for name in jobs}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(name):
        engine, requests = jobs[name]
        try:
            start.wait()
            for _ in range(3):  # several rounds, so the jobs overlap at different steps
                got[name].append([[px(im) for im in engine.generate(r).images] for r in requests])
        except BaseException as err:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(err)
    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    for name in jobs:
        for round_images in got[name]:
            for want, have in zip(expected[name], round_images):
                assert len(want) == len(have)
                assert all(np.array_equal(w, h) for w, h in zip(want, have)), name
