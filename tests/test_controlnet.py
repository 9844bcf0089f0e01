"""The ControlNet extension on the real engine with real diffusers models (tiny, 2 steps, CPU).

A random-weight ControlNet in the `control_v11p_sd15` single-file layout runs on a tiny SD1 checkpoint
in the real layout. Exactness is checked against hand computations with the same diffusers
ControlNetModel: an extension in the test computes the residuals itself and feeds them to the same
engine, so any difference in hint, rows, scales or timing shows as different pixels.
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from modules.cmd_args import parse_args
from modules.extensions.hooks import JobExtension
from modules.extensions.runner import ExtensionArgsError, ExtensionHookError, ExtensionSet
from modules.extensions.startup import load_extensions
from modules.generation.request import GenerationRequest, HiresOptions, InpaintOptions, Mode
from modules.models.options import ModelOptions
from modules.models.registry import ModelRegistry
from modules.paths import EXTENSIONS_BUILTIN_DIR, Paths
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.checkpoint_factory import make_checkpoint
from tests.controlnet_files import (CONTROLNET_EXT_DIR, make_controlnet_for_unet, make_sd15_controlnet,
                                    make_sdxl_controlnet_folder, make_t2i_adapter_folder)
from tests.tiny_model import FixedProvider, tiny_loaded_model
from tests.torch_threads import one_torch_thread as single_torch_thread

if str(CONTROLNET_EXT_DIR) not in sys.path:
    sys.path.append(str(CONTROLNET_EXT_DIR))

from controlnet_ext import control_image, residuals  # noqa: E402
from controlnet_ext.units import ControlMode, ControlUnit, ResizeMode  # noqa: E402

SIZE = 64
HINT = 256  # the tiny VAE halves (64 px -> 32 latent cells); the ControlNet's hint is 8x the latents
CANNY = "control_v11p_sd15_canny"
OTHER = "control_v11p_sd15_lineart"
XL = "diffusers_xl_canny_tiny"
TINY = "control_tiny_vae8"  # for tests/tiny_model's UNet, whose VAE scales by 8 as the real ones do
ADAPTER = "t2iadapter_sketch_tiny"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    with single_torch_thread():
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("controlnet-data")
    make_checkpoint(root / "models" / "Stable-diffusion" / "tiny_sd1.safetensors", "sd1", seed=3)
    folder = root / "models" / "ControlNet"
    return {"root": root, CANNY: make_sd15_controlnet(folder / f"{CANNY}.safetensors", seed=11),
            OTHER: make_sd15_controlnet(folder / f"{OTHER}.pth", seed=12),
            XL: make_sdxl_controlnet_folder(folder / XL, seed=13),
            TINY: make_controlnet_for_unet(folder / TINY, dict(tiny_loaded_model(seed=0).unet.config), seed=14,
                                           layout="folder"),
            ADAPTER: make_t2i_adapter_folder(folder / ADAPTER, seed=15),
            "sdxl": make_checkpoint(root / "models" / "Stable-diffusion" / "tiny_sdxl.safetensors", "sdxl", seed=4)}


@pytest.fixture(scope="module")
def data_dir(files) -> Path:
    return files["root"]


@pytest.fixture(scope="module")
def loaded(data_dir):
    args = parse_args(["--data-dir", str(data_dir)])
    return load_extensions(Paths(data_dir=data_dir), SettingsStore(None), args, builtin_dir=EXTENSIONS_BUILTIN_DIR)


@pytest.fixture(scope="module")
def ext(loaded):
    found = loaded.extension_set.find("controlnet")
    assert found is not None, [e.errors for e in loaded.catalog.extensions]
    return found


@pytest.fixture(scope="module")
def registry(data_dir):
    return ModelRegistry(Paths(data_dir=data_dir), ModelOptions(device="cpu"), embedded_dir=None)


@pytest.fixture(scope="module")
def model(registry):
    return registry.get()


def engine_for(registry, data_dir, *extensions) -> Engine:
    return Engine(registry, SettingsStore(None), Paths(data_dir=data_dir), extensions=ExtensionSet(extensions))


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def shape_image(size=SIZE, box=(16, 12, 44, 40)) -> Image.Image:
    img = Image.new("RGB", (size, size), (0, 0, 0))
    img.paste((255, 255, 255), box)
    return img


def request(ext=None, units=None, **fields) -> GenerationRequest:
    base = dict(prompt="a white square", negative_prompt="blurry", seed=7, steps=2, sampler_name="Euler",
                cfg_scale=5.0, width=SIZE, height=SIZE, save_images=False)
    if units is not None:
        base["extensions"] = {"controlnet": ext.args_from_api({"args": units})}
    return GenerationRequest(**{**base, **fields})


def px(result) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.int16) for im in result.images])


def control_map(box=(64, 48, 176, 160)) -> Image.Image:
    """A white box on black at the hint's size, so the hint is the map itself (no resampling)."""
    return shape_image(HINT, box)


def unit(**fields) -> dict:
    return {"module": "none", "model": CANNY, "image": b64(control_map()), **fields}


# ---------------------------------------------------------------------------------------------
# a first path: txt2img, one unit, module none


def test_one_unit_changes_the_picture_and_weight_0_and_guidance_end_0_do_not(ext, registry, data_dir):
    engine = engine_for(registry, data_dir, ext)
    plain = engine.generate(request())
    controlled = engine.generate(request(ext, [unit()]))
    assert len(controlled.images) == 1 and len(controlled.extra_images) == 1  # the detected map follows
    assert controlled.extra_images[0].size == (SIZE, SIZE)
    assert np.abs(px(controlled) - px(plain)).max() > 0
    for off in (unit(weight=0), unit(guidance_end=0), unit(enabled=False)):
        assert np.array_equal(px(engine.generate(request(ext, [off]))), px(plain)), off


# ---------------------------------------------------------------------------------------------
# exactness: the same residuals computed by hand give the same pixels


class HandControl(JobExtension):
    """Feeds the UNet residuals computed here, from the diffusers ControlNetModel built straight
    from the file's weights: the hint is the unit image / 255 at the pass's size, rows repeated."""

    name = "hand-control"
    always_on = True

    def __init__(self, nets: list, hints: list[Image.Image], weights: list[float],
                 modes: Optional[list[ControlMode]] = None) -> None:
        self.nets, self.hints, self.weights = nets, hints, weights
        self.modes = modes or [ControlMode.BALANCED] * len(nets)

    def unet_step(self, job, batch, step, args):
        h, w = step.sample.shape[-2] * 8, step.sample.shape[-1] * 8
        down_total = mid_total = None
        for net, image, weight, mode in zip(self.nets, self.hints, self.weights, self.modes):
            hint = torch.from_numpy(np.asarray(image.resize((w, h)), dtype=np.float32) / 255.0)
            hint = hint.permute(2, 0, 1)[None].repeat(step.sample.shape[0], 1, 1, 1)
            if mode is ControlMode.BALANCED:
                down, mid = net(step.sample[:, :4], step.timestep, encoder_hidden_states=step.encoder_hidden_states,
                                controlnet_cond=hint, conditioning_scale=weight, return_dict=False)
            else:
                down, mid = net(step.sample[:, :4], step.timestep, encoder_hidden_states=step.encoder_hidden_states,
                                controlnet_cond=hint, conditioning_scale=1.0, return_dict=False)
                outs = [*down, mid]
                outs = [o * (weight * 0.825 ** (12 - i)) for i, o in enumerate(outs)]  # 13 = 12 down + mid
                if mode is ControlMode.CONTROL:
                    half = outs[0].shape[0] // 2
                    for o in outs:
                        o[:half] = 0  # uncond rows: no control
                down, mid = outs[:-1], outs[-1]
            down_total = list(down) if down_total is None else [a + b for a, b in zip(down_total, down)]
            mid_total = mid if mid_total is None else mid_total + mid
        step.unet_kwargs["down_block_additional_residuals"] = tuple(down_total)
        step.unet_kwargs["mid_block_additional_residual"] = mid_total


def test_weight_scales_the_residuals_exactly(ext, registry, data_dir, files):
    net = files[CANNY].build()
    for weight in (1.0, 0.6):
        ours = engine_for(registry, data_dir, ext).generate(request(ext, [unit(weight=weight)]))
        hand = engine_for(registry, data_dir, HandControl([net], [control_map()], [weight])).generate(request())
        assert np.array_equal(px(ours), px(hand)), weight


def test_two_and_three_units_add_their_residuals(ext, registry, data_dir, files):
    second, third = control_map(box=(16, 120, 240, 240)), control_map(box=(150, 0, 256, 90))
    units = [unit(weight=0.8), unit(model=OTHER, image=b64(second), weight=0.5),
             unit(image=b64(third), weight=0.3, control_mode="ControlNet is more important")]
    nets = [files[CANNY].build(), files[OTHER].build(), files[CANNY].build()]
    maps, weights = [control_map(), second, third], [0.8, 0.5, 0.3]
    modes = [ControlMode.BALANCED, ControlMode.BALANCED, ControlMode.CONTROL]
    results = {}
    for count in (1, 2, 3):
        ours = engine_for(registry, data_dir, ext).generate(request(ext, units[:count]))
        hand = engine_for(registry, data_dir, HandControl(nets[:count], maps[:count], weights[:count],
                                                          modes[:count])).generate(request())
        assert np.array_equal(px(ours), px(hand)), count
        assert len(ours.extra_images) == count
        results[count] = px(ours)
    assert not np.array_equal(results[1], results[2]) and not np.array_equal(results[2], results[3])


@pytest.mark.parametrize("mode", [ControlMode.PROMPT, ControlMode.CONTROL])
def test_control_modes_scale_and_route_the_residuals_as_defined(ext, registry, data_dir, files, mode):
    sent = mode.value if mode is ControlMode.PROMPT else mode.int_value  # string and int forms
    ours = engine_for(registry, data_dir, ext).generate(request(ext, [unit(control_mode=sent, weight=0.9)]))
    hand = engine_for(registry, data_dir, HandControl([files[CANNY].build()], [control_map()], [0.9],
                                                      [mode])).generate(request())
    assert np.array_equal(px(ours), px(hand))
    balanced = engine_for(registry, data_dir, ext).generate(request(ext, [unit(weight=0.9)]))
    assert not np.array_equal(px(ours), px(balanced))


# ---------------------------------------------------------------------------------------------
# img2img, inpaint, hires fix


def test_img2img_unit_without_image_uses_the_img2img_input(ext, registry, data_dir):
    init = shape_image(box=(8, 8, 40, 56))
    base = dict(mode=Mode.IMG2IMG, init_images=(init,), denoising_strength=0.8)
    engine = engine_for(registry, data_dir, ext)
    plain = engine.generate(request(**base))
    from_input = engine.generate(request(ext, [{"module": "none", "model": CANNY}], **base))
    # the img2img input with the img2img resize mode ("Just resize") is what the unit sees
    explicit = engine.generate(request(ext, [unit(image=b64(init), resize_mode="Just Resize")], **base))
    assert np.array_equal(px(from_input), px(explicit))
    assert not np.array_equal(px(from_input), px(plain))
    zero = engine.generate(request(ext, [{"module": "none", "model": CANNY, "weight": 0}], **base))
    assert np.array_equal(px(zero), px(plain))


def test_inpaint_with_a_unit(ext, registry, data_dir):
    init = shape_image()
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (20, 20, 50, 50))
    base = dict(mode=Mode.INPAINT, init_images=(init,), inpaint=InpaintOptions(mask=mask, mask_blur=0),
                denoising_strength=0.9)
    engine = engine_for(registry, data_dir, ext)
    plain = engine.generate(request(**base))
    controlled = engine.generate(request(ext, [unit(image=b64(shape_image(box=(0, 0, 30, 64))))], **base))
    assert not np.array_equal(px(controlled), px(plain))
    off = engine.generate(request(ext, [unit(guidance_end=0)], **base))
    assert np.array_equal(px(off), px(plain))


class HintSizes(JobExtension):
    """Records (pass, sample size) of the UNet calls that carry ControlNet residuals."""

    name = "hint-sizes"
    always_on = True
    sort_order = 100
    seen: ClassVar[list] = []

    def __init__(self) -> None:
        self.seen = []
        self.inner = None

    def unet_step(self, job, batch, step, args):
        self.seen.append((step.pass_index, tuple(step.sample.shape[-2:])))


def test_hires_fix_runs_the_control_at_both_sizes_and_hr_option_picks_the_pass(ext, data_dir, monkeypatch):
    # hires fix needs a VAE that scales by 8 (the tiny checkpoint's scales by 2)
    hires = HiresOptions(scale=1.5, upscaler="Latent", second_pass_steps=2)
    base = dict(hires=hires, denoising_strength=0.6)
    engine = Engine(FixedProvider(tiny_loaded_model(seed=0)), SettingsStore(None), Paths(data_dir=data_dir),
                    extensions=ExtensionSet([ext]))
    plain = engine.generate(request(**base))
    both = engine.generate(request(ext, [unit(model=TINY, image=b64(shape_image()))], **base))
    assert both.images[0].size == (96, 96) and not np.array_equal(px(both), px(plain))
    assert [im.size for im in both.extra_images] == [(96, 96), (64, 64)]  # the hires map, then the first pass's

    calls: list = []
    real = ext._run_controlnet

    def spy(prepared, job, step, height, width):
        calls.append((step.pass_index, height, width))
        return real(prepared, job, step, height, width)

    monkeypatch.setattr(ext, "_run_controlnet", spy)
    hr = dict(model=TINY, image=b64(shape_image()))
    engine.generate(request(ext, [unit(hr_option="Both", **hr)], **base))
    assert sorted(set(calls)) == [(0, 64, 64), (1, 96, 96)]  # the hint at each pass's size
    calls.clear()
    low = engine.generate(request(ext, [unit(hr_option="Low res only", **hr)], **base))
    assert set(calls) == {(0, 64, 64)}
    calls.clear()
    high = engine.generate(request(ext, [unit(hr_option="High res only", **hr)], **base))
    assert set(calls) == {(1, 96, 96)}
    assert not np.array_equal(px(low), px(high))


# ---------------------------------------------------------------------------------------------
# errors


def test_a_family_mismatch_names_both(ext, registry, data_dir):
    with pytest.raises(ExtensionHookError) as err:
        engine_for(registry, data_dir, ext).generate(request(ext, [unit(model=XL)]))
    text = str(err.value)  # both named, with their families (the tiny ones are "custom": no real width)
    assert XL in text and "tiny_sd1" in text and "cross-attention 64" in text and "cross-attention 32" in text, text


def test_unknown_module_and_model_name_the_field_and_the_valid_names(ext):
    with pytest.raises(ValidationError) as err:
        ext.args_from_api({"args": [unit(), unit(module="cany", model="control_v11p_sd15_cany")]})
    errors = {tuple(e["loc"]): e["msg"] for e in err.value.errors()}
    assert set(errors) == {("args", 1, "module"), ("args", 1, "model")}
    assert "canny" in errors[("args", 1, "module")]
    assert CANNY in errors[("args", 1, "model")]


def test_a_bad_image_is_an_error_naming_its_unit(ext, registry, data_dir):
    with pytest.raises(ValidationError) as err:
        ext.args_from_api({"args": [unit(), unit(image="not-an-image!!")]})
    assert [tuple(e["loc"]) for e in err.value.errors()] == [("args", 1, "image")]
    # through the engine's own parsing: ExtensionArgsError, which the API answers with 422
    with pytest.raises(ExtensionArgsError):
        ExtensionSet([ext]).parse_args("ControlNet", {"args": [unit(input_image="%%%")]})


def test_txt2img_unit_without_an_image_says_so(ext, registry, data_dir):
    with pytest.raises(ExtensionHookError) as err:
        engine_for(registry, data_dir, ext).generate(request(ext, [{"module": "none", "model": CANNY}]))
    assert "args[0].image" in str(err.value)


# ---------------------------------------------------------------------------------------------
# the API's unit forms, infotext


def test_api_forms_enum_ints_old_names_aliases_and_image_with_mask(ext):
    image, mask = shape_image(), Image.new("L", (SIZE, SIZE), 255)
    args = ext.args_from_api({"args": [
        {"input_image": b64(image), "module": "none", "model": f"{CANNY}", "resize_mode": 0, "control_mode": 2,
         "lowvram": True},
        {"image": {"image": b64(image), "mask": b64(mask)}, "module": "none", "model": "None",
         "resize_mode": "Inner Fit (Scale to Fit)", "control_mode": "My prompt is more important"},
        {"image": b64(image), "resize_mode": "Envelope (Outer Fit)", "enabled": False},
    ]})
    first, second, third = args.units
    assert first.resize_mode is ResizeMode.RESIZE and first.control_mode is ControlMode.CONTROL and first.low_vram
    assert first.image.size == (SIZE, SIZE) and first.model.startswith(CANNY + " [")  # the title, with its hash
    assert second.resize_mode is ResizeMode.CROP and second.control_mode is ControlMode.PROMPT
    assert second.mask is not None and np.asarray(second.mask.convert("L")).min() == 255
    assert third.resize_mode is ResizeMode.FILL and not third.enabled
    assert ext.is_enabled(args) and not ext.is_enabled(ext.args_from_api({"args": [{"enabled": False}]}))


def test_infotext_is_sd_webui_controlnets_and_reads_back(ext, registry, data_dir, model):
    from modules.infotext import parse_infotext

    sent = [unit(module="canny", weight=0.75, guidance_start=0.1, guidance_end=0.9, resize_mode=2, control_mode=1,
                 pixel_perfect=True),
            {"enabled": False, "module": "none", "model": CANNY},
            unit()]
    result = engine_for(registry, data_dir, ext).generate(request(ext, sent))
    title = ext.library.find(CANNY).title
    params = parse_infotext(result.infotexts[0]).params
    assert params["ControlNet 0"] == (
        f"Module: canny, Model: {title}, Weight: 0.75, Resize Mode: Resize and Fill, Processor Res: 512, "
        "Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.1, Guidance End: 0.9, Pixel Perfect: True, "
        "Control Mode: My prompt is more important")
    assert params["ControlNet 1"].startswith(f"Module: none, Model: {title}, Weight: 1.0, Resize Mode: Crop and Resize")
    assert "ControlNet 2" not in params  # numbered among the enabled units
    assert 'ControlNet 0: "Module: canny' in result.infotexts[0]  # quoted: it holds , and :

    back = ext.args_from_infotext(params)
    fields = ("module", "model", "weight", "resize_mode", "guidance_start", "guidance_end", "pixel_perfect",
              "control_mode")
    written = [ext.with_defaults(u) for _, u in ext.args_from_api({"args": sent}).enabled_units]
    assert [[getattr(u, f) for f in fields] for u in back.units] == [[getattr(u, f) for f in fields] for u in written]
    assert all(u.enabled and u.image is None for u in back.units)
    assert ext.args_from_infotext({"Steps": "20"}) is None


# ---------------------------------------------------------------------------------------------
# control images: resize modes and pixel perfect, as sd-webui-controlnet sizes them


def test_resize_modes_and_pixel_perfect_give_sd_webui_controlnets_sizes():
    detected = np.zeros((100, 50, 3), np.uint8)  # H x W
    detected[20:80, 10:40] = 255
    # pixel perfect: short side * the factor the mode scales by (k = max for crop/just resize, min for fill)
    assert control_image.pixel_perfect_resolution(100, 50, 64, 64, ResizeMode.CROP) == 64
    assert control_image.pixel_perfect_resolution(100, 50, 64, 64, ResizeMode.RESIZE) == 64
    assert control_image.pixel_perfect_resolution(100, 50, 64, 64, ResizeMode.FILL) == 32
    assert control_image.pixel_perfect_resolution(512, 768, 512, 512, ResizeMode.CROP) == 512
    assert control_image.pixel_perfect_resolution(512, 768, 768, 512, ResizeMode.FILL) == 341
    for mode in ResizeMode:
        assert control_image.fit_map(detected, mode, 64, 96).shape == (64, 96, 3)
    fill = control_image.fit_map(detected, ResizeMode.FILL, 64, 64)
    # scaled by min(64/100, 64/50) = 0.64 to 32 x 64, centred, padded with the border's colour (black)
    assert (fill[:, :16] == 0).all() and (fill[:, 48:] == 0).all() and fill[:, 16:48].max() == 255
    crop = control_image.fit_map(detected, ResizeMode.CROP, 64, 64)
    # scaled by 1.28 to 128 x 64, the middle 64 rows kept: the white box (rows 26..102) covers them all
    assert crop[:, 16:48].min() == 255 and crop[:, :10].max() == 0


def test_residual_rules():
    u = ControlUnit(weight=0.5, guidance_start=0.25, guidance_end=0.5)
    assert [residuals.active_at(u, i, 8) for i in range(8)] == [False, False, True, True, True, False, False, False]
    assert not residuals.active_at(ControlUnit(guidance_end=0.0), 0, 8)
    assert residuals.controlnet_scales(u, 13, 0) == [0.5] * 13
    soft = residuals.controlnet_scales(u.model_copy(update={"control_mode": ControlMode.PROMPT}), 13, 0)
    assert soft[-1] == 0.5 and soft[0] == pytest.approx(0.5 * 0.825 ** 12)
    xl = residuals.controlnet_scales(u.model_copy(update={"control_mode": ControlMode.PROMPT}), 10, 0)
    assert xl == soft[:10]  # SDXL's 10 residuals take the first 10 scales, as sd-webui-controlnet
    canny_hires = ControlUnit(module="canny")
    assert residuals.controlnet_scales(canny_hires, 13, 1)[0] == pytest.approx(0.825 ** 12)


# ---------------------------------------------------------------------------------------------
# detected maps, T2I-Adapter, low VRAM


def test_detected_maps_follow_the_setting_and_the_units_flag(ext, registry, data_dir):
    settings = SettingsStore(None)
    engine = Engine(registry, settings, Paths(data_dir=data_dir), extensions=ExtensionSet([ext]))
    shown = engine.generate(request(ext, [unit(module="invert")]))
    assert len(shown.extra_images) == 1
    inverted = control_image.fit_map(255 - np.asarray(control_map()), ResizeMode.CROP, SIZE, SIZE)
    assert np.array_equal(np.asarray(shown.extra_images[0]), inverted)  # the map at the image's size, not the input
    assert engine.generate(request(ext, [unit(save_detected_map=False)])).extra_images == []
    settings.update({"control_net_no_detectmap": True})
    hidden = engine.generate(request(ext, [unit(module="invert")]))
    assert hidden.extra_images == [] and np.array_equal(px(hidden), px(shown))


def test_t2i_adapter_unit_adds_intrablock_residuals(ext, registry, data_dir, files):
    engine = engine_for(registry, data_dir, ext)
    plain = engine.generate(request())
    adapted = engine.generate(request(ext, [unit(model=ADAPTER, weight=0.8)]))
    assert not np.array_equal(px(adapted), px(plain))
    adapter = files[ADAPTER].build()

    class HandAdapter(JobExtension):
        name = "hand-adapter"
        always_on = True

        def unet_step(self, job, batch, step, args):
            hint = torch.from_numpy(np.asarray(control_map(), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            features = [f.repeat(step.sample.shape[0], 1, 1, 1) * 0.8 for f in adapter(hint)]
            step.unet_kwargs["down_intrablock_additional_residuals"] = features

    hand = engine_for(registry, data_dir, HandAdapter()).generate(request())
    assert np.array_equal(px(adapted), px(hand))
    assert np.array_equal(px(engine.generate(request(ext, [unit(model=ADAPTER, weight=0)]))), px(plain))


def test_low_vram_gives_the_same_pixels(ext, registry, data_dir):
    engine = engine_for(registry, data_dir, ext)
    normal = engine.generate(request(ext, [unit(weight=0.7)]))
    low = engine.generate(request(ext, [unit(weight=0.7, lowvram=True)]))
    assert np.array_equal(px(low), px(normal))


def test_inpaint_only_takes_the_img2img_input_and_its_mask(ext, registry, data_dir, monkeypatch):
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (20, 20, 50, 50))
    base = dict(mode=Mode.INPAINT, init_images=(shape_image(),), inpaint=InpaintOptions(mask=mask, mask_blur=0),
                denoising_strength=0.9)
    hints = []
    real = ext._run_controlnet

    def spy(prepared, job, step, height, width):
        hints.append(prepared.hint_at(height, width, step.sample.device, step.sample.dtype))
        return real(prepared, job, step, height, width)

    monkeypatch.setattr(ext, "_run_controlnet", spy)
    result = engine_for(registry, data_dir, ext).generate(request(ext, [{"module": "inpaint_only", "model": CANNY}],
                                                                  **base))
    hint = hints[0][0]  # [3, 256, 256]: the init image (x4), -1 under the mask (x4: 80..200)
    assert hint.shape == (3, HINT, HINT)
    assert (hint[:, 128, 128] == -1).all() and (hint[:, 5, 5] == 0).all() and (hint[:, 60, 70] == 1).all()
    assert len(result.images) == 1


def test_args_from_ui_goes_through_the_same_checks(ext):
    from controlnet_ext.ui import UNIT_FIELDS

    values = {"enabled": True, "image": np.asarray(control_map()), "mask": None, "module": "canny", "model": CANNY,
              "weight": 0.5, "resize_mode": "Just Resize", "low_vram": False, "processor_res": 256,
              "threshold_a": 50, "threshold_b": 150, "guidance_start": 0.0, "guidance_end": 1.0,
              "pixel_perfect": False, "control_mode": "Balanced", "hr_option": "Both"}
    off = {**values, "enabled": False, "image": None, "model": "None"}
    args = ext.args_from_ui([values[f] for f in UNIT_FIELDS] + [off[f] for f in UNIT_FIELDS])
    first = args.units[0]
    assert first.image.size == (HINT, HINT) and first.model == ext.library.find(CANNY).title and first.weight == 0.5
    assert not args.units[1].enabled
    with pytest.raises(ValidationError) as err:
        ext.args_from_ui([{**values, "module": "nope"}[f] for f in UNIT_FIELDS])
    assert [tuple(e["loc"]) for e in err.value.errors()] == [("units", 0, "module")]


def test_sdxl_controlnet_folder_runs_with_the_unets_size_conditioning(ext, data_dir, monkeypatch):
    xl = ModelRegistry(Paths(data_dir=data_dir), ModelOptions(device="cpu"), embedded_dir=None)
    engine = engine_for(xl, data_dir, ext)
    base = dict(checkpoint="tiny_sdxl.safetensors")
    plain = engine.generate(request(**base))
    seen = []
    real = ext._run_controlnet

    def spy(prepared, job, step, height, width):
        seen.append(sorted(step.added_cond_kwargs))
        return real(prepared, job, step, height, width)

    monkeypatch.setattr(ext, "_run_controlnet", spy)
    controlled = engine.generate(request(ext, [unit(model=XL)], **base))
    assert seen and seen[0] == ["text_embeds", "time_ids"]
    assert not np.array_equal(px(controlled), px(plain))
    assert np.array_equal(px(engine.generate(request(ext, [unit(model=XL, weight=0)], **base))), px(plain))


def test_folder_flags_come_from_the_extensions_preload(tmp_path, files):
    from modules.extensions.preload import parse_args_with_extensions

    extra, annotators = tmp_path / "elsewhere", tmp_path / "annotators"
    make_sd15_controlnet(extra / "control_v11p_sd15_far_away.safetensors", seed=21)
    args, _ = parse_args_with_extensions(["--data-dir", str(tmp_path / "data"), "--controlnet-dir", str(extra),
                                          "--controlnet-annotator-models-path", str(annotators)])
    assert args.controlnet_dir == str(extra) and args.controlnet_annotator_models_path == str(annotators)
    loaded = load_extensions(Paths(data_dir=tmp_path / "data"), SettingsStore(None), args,
                             builtin_dir=EXTENSIONS_BUILTIN_DIR)
    ext = loaded.extension_set.get("controlnet")
    assert ext.library.find("control_v11p_sd15_far_away") is not None
    assert ext.annotator_dir == annotators and ext.clip_vision_dir == tmp_path / "data" / "models" / "clip_vision"
