"""Infotext: exact A1111 text, A1111 parsing rules, request round trip, reading from images."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from modules.infotext import (
    ImageParams,
    InfotextData,
    build_infotext,
    format_number,
    parse_infotext,
    quote,
    read_infotext,
    request_fields_from_infotext,
    user_comment_exif,
)
from modules.generation.request import GenerationRequest, InpaintArea, InpaintOptions, MaskedContent, Mode, RngSource

MASK = Image.new("L", (64, 64), 255)
INIT = Image.new("RGB", (64, 64))


def image_params(**overrides) -> ImageParams:
    values = dict(
        prompt="masterpiece, best quality, 1girl",
        negative_prompt="lowres, bad anatomy",
        seed=1234567890,
        subseed=987654321,
        width=512,
        height=768,
        sampler_name="DPM++ 2M",
        scheduler="Karras",
        model_name="v1-5-pruned-emaonly",
        model_hash="6ce0161689",
        version="v1.10.1",
    )
    values.update(overrides)
    return ImageParams(**values)


# ---------------------------------------------------------------------------------------------
# exact text


def test_txt2img_exact_a1111_text():
    request = GenerationRequest(prompt="ignored: ImageParams carries the prompt", steps=20, cfg_scale=7.0, clip_skip=2)
    assert build_infotext(request, image_params()) == (
        "masterpiece, best quality, 1girl\n"
        "Negative prompt: lowres, bad anatomy\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, "
        "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Version: v1.10.1"
    )


def test_defaults_are_left_out_and_empty_negative_has_no_line():
    request = GenerationRequest(steps=30, cfg_scale=7.5)
    text = build_infotext(
        request,
        image_params(prompt="a cat", negative_prompt="", sampler_name="Euler a", scheduler="Automatic",
                     width=512, height=512, model_hash=None, model_name=None, version=None, seed=42),
    )
    assert text == "a cat\nSteps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: 42, Size: 512x512"


def test_variation_seed_resize_rng_vae_and_key_order():
    request = GenerationRequest(
        steps=25, cfg_scale=6.0, subseed_strength=0.3, seed_resize_from_w=768, seed_resize_from_h=512,
        rng_source=RngSource.CPU, clip_skip=2,
    )
    text = build_infotext(
        request, image_params(prompt="p", negative_prompt="", seed=7, subseed=8, vae_name="vae-ft-mse-840000-ema-pruned.safetensors", vae_hash="735e4c3a"),
    )
    assert text.splitlines()[1] == (
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6, Seed: 7, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a, "
        "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Variation seed: 8, Variation seed strength: 0.3, "
        "Seed resize from: 768x512, Clip skip: 2, RNG: CPU, Version: v1.10.1"
    )


def test_variation_seed_only_with_strength():
    request = GenerationRequest(subseed=5, subseed_strength=0.0, seed_resize_from_w=512, seed_resize_from_h=0)
    text = build_infotext(request, image_params())
    assert "Variation seed" not in text
    assert "Seed resize from" not in text  # needs both sides


def test_img2img_writes_denoising_strength():
    request = GenerationRequest(mode=Mode.IMG2IMG, init_images=(INIT,), denoising_strength=0.6, steps=20, cfg_scale=7)
    text = build_infotext(request, image_params(negative_prompt="", version=None))
    assert text.endswith("Model: v1-5-pruned-emaonly, Denoising strength: 0.6")
    txt2img = build_infotext(GenerationRequest(denoising_strength=0.6), image_params())
    assert "Denoising strength" not in txt2img


def test_inpaint_keys_follow_a1111_img2img_order():
    request = GenerationRequest(
        mode=Mode.INPAINT, init_images=(INIT,), denoising_strength=0.75,
        inpaint=InpaintOptions(mask=MASK, mask_blur=4, inpaint_area=InpaintArea.ONLY_MASKED, only_masked_padding=32),
    )
    text = build_infotext(request, image_params(negative_prompt=""))
    assert text.splitlines()[1].endswith(
        "Model: v1-5-pruned-emaonly, Denoising strength: 0.75, Mask blur: 4, Inpaint area: Only masked, "
        "Masked area padding: 32, Version: v1.10.1"
    )
    request = GenerationRequest(
        mode=Mode.INPAINT, init_images=(INIT,), denoising_strength=1.0,
        inpaint=InpaintOptions(mask=MASK, mask_blur=0, invert_mask=True, masked_content=MaskedContent.LATENT_NOISE),
    )
    text = build_infotext(request, image_params(negative_prompt="", version=None))
    assert text.splitlines()[1].endswith(
        "Denoising strength: 1, Mask blur: 0, Mask mode: Inpaint not masked, Masked content: latent noise"
    )


def test_extension_params_quoting_flags_and_overrides():
    extra = {
        "Lora hashes": "add_detail: 7c6bad76eb54, film: 0a1b2c3d4e5f",
        "Hires upscaler": None,  # None drops the key
        "Tiling": "Tiling",  # key equal to value: written alone, as A1111
        "Model": "override",  # an existing key keeps its place
        "Template": "line one\nline two",
        "Unicode": "猫, 😀",
    }
    text = build_infotext(GenerationRequest(), image_params(extra=extra, negative_prompt=""))
    line = text.splitlines()[1]
    assert "Model: override, " in line and line.index("Model: override") < line.index("Lora hashes")
    assert 'Lora hashes: "add_detail: 7c6bad76eb54, film: 0a1b2c3d4e5f"' in line
    assert ", Tiling, " in line
    assert "Hires upscaler" not in line
    assert 'Template: "line one\\nline two"' in line
    assert 'Unicode: "猫, 😀"' in line  # ensure_ascii=False, as A1111
    params = parse_infotext(text).params
    assert params["Lora hashes"] == extra["Lora hashes"]
    assert params["Template"] == "line one\nline two"
    assert params["Unicode"] == "猫, 😀"


def test_extension_key_that_cannot_be_read_back_is_refused():
    with pytest.raises(ValueError, match="infotext key"):
        build_infotext(GenerationRequest(), image_params(extra={"Bad: key": "x"}))


def test_quote_and_number_format():
    assert quote("DPM++ 2M") == "DPM++ 2M"
    assert quote("a, b") == '"a, b"'
    assert quote("a: b") == '"a: b"'
    assert quote('say "hi"\nnow') == '"say \\"hi\\"\\nnow"'
    assert quote("é") == "é"
    assert format_number(7.0) == "7" and format_number(7.5) == "7.5" and format_number(0.75) == "0.75"
    assert format_number(20) == "20" and format_number(True) == "True"


def test_multiline_prompts_are_kept():
    text = build_infotext(GenerationRequest(), image_params(prompt="line one,\nline two: more", negative_prompt="bad\nworse"))
    data = parse_infotext(text)
    assert data.prompt == "line one,\nline two: more"
    assert data.negative_prompt == "bad\nworse"


# ---------------------------------------------------------------------------------------------
# parsing A1111 texts


A1111_OLD = (
    "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, "
    "by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\n"
    "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, "
    "mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"
)


def test_parse_a1111_docstring_example():
    data = parse_infotext(A1111_OLD)
    assert data.prompt.startswith("girl with an artist's beret") and data.prompt.endswith("intricate")
    assert data.negative_prompt.startswith("ugly, fat") and data.negative_prompt.endswith("messy drawing")
    assert data.params == {
        "Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "965400086",
        "Size": "512x512", "Model hash": "45dee52b",
    }
    fields = request_fields_from_infotext(A1111_OLD)
    assert fields["steps"] == 20 and fields["cfg_scale"] == 7.0 and fields["seed"] == 965400086
    assert (fields["width"], fields["height"]) == (512, 512)
    assert fields["sampler_name"] == "Euler a"
    # absence means A1111's default
    assert fields["scheduler"] == "Automatic" and fields["clip_skip"] == 1
    assert fields["rng_source"] is RngSource.DEVICE and fields["subseed_strength"] == 0.0
    assert fields["checkpoint"] == "45dee52b"  # no "Model": the hash names the checkpoint
    assert "inpaint_options" not in fields and "denoising_strength" not in fields


def test_parse_a1111_current_example_with_quoted_values():
    text = (
        "1girl, <lora:add_detail:0.5>\n"
        "Negative prompt: (worst quality:1.4)\n"
        "Steps: 28, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 6.5, Seed: 3307434093, "
        "Size: 512x768, Model hash: 7f96a1a9ca, Model: anything-v5, Denoising strength: 0.45, Clip skip: 2, "
        'Hires upscale: 2, Hires upscaler: R-ESRGAN 4x+ Anime6B, Lora hashes: "add_detail: 7c6bad76eb54", '
        'TI hashes: "easynegative: c74b4e810b03, bad: 1", Version: v1.10.1'
    )
    data = parse_infotext(text)
    assert data.negative_prompt == "(worst quality:1.4)"
    assert data.params["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert data.params["TI hashes"] == "easynegative: c74b4e810b03, bad: 1"
    assert data.params["Version"] == "v1.10.1"
    fields = request_fields_from_infotext(text)
    assert fields["sampler_name"] == "DPM++ 2M SDE" and fields["scheduler"] == "Karras"
    assert fields["cfg_scale"] == 6.5 and fields["clip_skip"] == 2 and fields["denoising_strength"] == 0.45
    assert fields["checkpoint"] == "anything-v5"
    request = GenerationRequest(**fields)  # every key is a GenerationRequest field
    assert request.width == 512 and request.height == 768


def test_old_combined_sampler_name_is_left_as_is():
    text = "a\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512"
    fields = request_fields_from_infotext(text)
    assert fields["sampler_name"] == "DPM++ 2M Karras"
    assert fields["scheduler"] == "Automatic"


def test_text_without_parameters_line_is_all_prompt():
    data = parse_infotext("just a prompt, with: a colon\nand a second line")
    assert data == InfotextData(prompt="just a prompt, with: a colon\nand a second line", negative_prompt="", params={})
    # two pairs are not enough for a parameters line (A1111 wants three)
    data = parse_infotext("prompt\nSteps: 20, Seed: 1")
    assert data.prompt == "prompt\nSteps: 20, Seed: 1" and data.params == {}


def test_negative_only_and_parameters_only():
    data = parse_infotext("Negative prompt: bad\nSteps: 1, Sampler: Euler, CFG scale: 1, Seed: 2, Size: 64x64")
    assert data.prompt == "" and data.negative_prompt == "bad"
    data = parse_infotext("Steps: 1, Sampler: Euler, CFG scale: 1, Seed: 2, Size: 64x64")
    assert data.prompt == "" and data.negative_prompt == "" and data.params["Size"] == "64x64"


def test_inpaint_fields_come_back_nested():
    text = (
        "p\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: 0.75, "
        "Mask blur: 8, Mask mode: Inpaint not masked, Inpaint area: Only masked, Masked area padding: 64, "
        "Masked content: latent nothing"
    )
    fields = request_fields_from_infotext(text)
    assert fields["inpaint_options"] == {
        "mask_blur": 8, "invert_mask": True, "inpaint_area": InpaintArea.ONLY_MASKED,
        "only_masked_padding": 64, "masked_content": MaskedContent.LATENT_NOTHING,
    }
    options = InpaintOptions(mask=MASK, **fields["inpaint_options"])
    assert options.masked_content is MaskedContent.LATENT_NOTHING


def test_unreadable_values_are_skipped_or_raise_when_strict():
    text = "p\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1, Size: big, RNG: NV"
    fields = request_fields_from_infotext(text)
    assert "steps" not in fields and "width" not in fields
    assert fields["rng_source"] is RngSource.DEVICE  # NV is not a source here; the default stays
    assert fields["seed"] == 1
    with pytest.raises(ValueError, match="'Steps'"):
        request_fields_from_infotext(text, strict=True)


def test_windows_line_endings():
    text = "a cat\r\nNegative prompt: dog\r\nSteps: 5, Sampler: Euler, CFG scale: 2, Seed: 3, Size: 64x128\r\n"
    fields = request_fields_from_infotext(text)
    assert fields["prompt"] == "a cat" and fields["negative_prompt"] == "dog"
    assert (fields["width"], fields["height"]) == (64, 128)


# ---------------------------------------------------------------------------------------------
# round trip


SAMPLERS = ["DPM++ 2M", "Euler a", "Euler", "DPM++ SDE", "DPM++ 2M SDE", "DDIM", "UniPC", "LMS", "DPM++ 2M Karras"]
SCHEDULERS = ["Automatic", "Karras", "Exponential", "SGM Uniform", "Uniform", "Simple", "Normal", "Beta"]
PROMPT_ALPHABET = st.sampled_from(
    list("abcxyz ABC019") + [",", ":", '"', "'", "\\", "\n", "\r", "\t", "(", ")", "[", "]", "<", ">", "{", "|",
                             "é", "猫", "😀", "\u00a0", "\u2028", "Negative prompt:", "Steps: 20, "]
)
text_values = st.lists(PROMPT_ALPHABET, max_size=25).map("".join)
sizes = st.integers(8, 256).map(lambda n: n * 8)


def canonical_prompt(text: str) -> str:
    """What an A1111 infotext keeps of a prompt: every line stripped, leading empty lines dropped
    (parse_generation_parameters joins with "\n" only once the prompt is non-empty)."""
    out = ""
    for line in text.split("\n"):
        out += ("" if out == "" else "\n") + line.strip()
    return out


def no_negative_marker(text: str) -> bool:
    return not any(line.strip().startswith("Negative prompt:") for line in text.split("\n"))


@st.composite
def requests_and_params(draw):
    mode = draw(st.sampled_from(list(Mode)))
    inpaint = None
    if mode is Mode.INPAINT:
        inpaint = InpaintOptions(
            mask=MASK,
            mask_blur=draw(st.integers(0, 64)),
            masked_content=draw(st.sampled_from(list(MaskedContent))),
            inpaint_area=draw(st.sampled_from(list(InpaintArea))),
            only_masked_padding=draw(st.integers(0, 256)),
            invert_mask=draw(st.booleans()),
        )
    prompt = draw(text_values.filter(no_negative_marker))
    negative = draw(text_values.filter(no_negative_marker))
    request = GenerationRequest(
        mode=mode,
        prompt=prompt,
        negative_prompt=negative,
        seed=draw(st.integers(0, 2**32 - 1)),
        subseed=draw(st.integers(0, 2**32 - 1)),
        subseed_strength=draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0))),
        seed_resize_from_w=draw(st.one_of(st.just(0), sizes)),
        seed_resize_from_h=draw(st.one_of(st.just(0), sizes)),
        rng_source=draw(st.sampled_from(list(RngSource))),
        steps=draw(st.integers(1, 150)),
        cfg_scale=draw(st.integers(0, 60)) / 2,
        width=draw(sizes),
        height=draw(sizes),
        clip_skip=draw(st.integers(1, 12)),
        init_images=(INIT,) if mode is not Mode.TXT2IMG else (),
        denoising_strength=draw(st.floats(0.0, 1.0)),
        inpaint=inpaint,
    )
    names = text_values.map(str.strip).filter(lambda s: "\n" not in s)
    extra_keys = st.sampled_from(["Lora hashes", "TI hashes", "Hires upscaler", "ADetailer model", "Emphasis"])
    image = ImageParams(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=request.seed,
        subseed=request.subseed,
        width=request.width,
        height=request.height,
        sampler_name=draw(st.sampled_from(SAMPLERS)),
        scheduler=draw(st.sampled_from(SCHEDULERS)),
        model_name=draw(st.one_of(st.none(), names)),
        model_hash=draw(st.one_of(st.none(), st.text("0123456789abcdef", min_size=10, max_size=10))),
        vae_name=draw(st.one_of(st.none(), names)),
        vae_hash=draw(st.one_of(st.none(), st.text("0123456789abcdef", min_size=8, max_size=8))),
        version=draw(st.one_of(st.none(), st.just("v1.10.1"))),
        extra=draw(st.dictionaries(extra_keys, text_values, max_size=3)),
    )
    return request, image


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests_and_params())
def test_round_trip_gives_back_every_field_the_text_carries(pair):
    request, image = pair
    for value in image.extra.values():
        assume(value not in image.extra)  # a flag-form pair (key == value) has no value to read
    text = build_infotext(request, image)
    fields = request_fields_from_infotext(text, strict=True)

    assert fields["prompt"] == canonical_prompt(request.prompt)
    assert fields["negative_prompt"] == canonical_prompt(request.negative_prompt)
    assert fields["steps"] == request.steps
    assert fields["sampler_name"] == image.sampler_name
    assert fields["scheduler"] == image.scheduler
    assert fields["cfg_scale"] == request.cfg_scale
    assert fields["seed"] == request.seed
    assert (fields["width"], fields["height"]) == (request.width, request.height)
    if request.subseed_strength:
        assert fields["subseed"] == request.subseed
    else:
        assert "subseed" not in fields
    assert fields["subseed_strength"] == request.subseed_strength
    if request.seed_resize_from_w and request.seed_resize_from_h:
        assert (fields["seed_resize_from_w"], fields["seed_resize_from_h"]) == (request.seed_resize_from_w, request.seed_resize_from_h)
    else:
        assert (fields["seed_resize_from_w"], fields["seed_resize_from_h"]) == (0, 0)
    assert fields["clip_skip"] == request.clip_skip
    assert fields["rng_source"] is request.rng_source
    if request.mode is Mode.TXT2IMG:
        assert "denoising_strength" not in fields
    else:
        assert fields["denoising_strength"] == request.denoising_strength
    expected_checkpoint = image.model_name or image.model_hash
    assert fields.get("checkpoint") == (expected_checkpoint or None)
    assert fields.get("vae") == (image.vae_name or None)
    if request.mode is Mode.INPAINT:
        opts = request.inpaint
        assert fields["inpaint_options"] == {
            "mask_blur": opts.mask_blur, "masked_content": opts.masked_content, "inpaint_area": opts.inpaint_area,
            "only_masked_padding": opts.only_masked_padding if opts.inpaint_area is InpaintArea.ONLY_MASKED else 32,
            "invert_mask": opts.invert_mask,
        }
    else:
        assert "inpaint_options" not in fields

    params = parse_infotext(text).params
    for key, value in image.extra.items():
        assert params[key] == value
    if image.version:
        assert params["Version"] == image.version
    if image.model_hash:
        assert params["Model hash"] == image.model_hash
    if image.vae_hash:
        assert params["VAE hash"] == image.vae_hash

    # the fields build a valid request again
    rebuilt = {k: v for k, v in fields.items() if k != "inpaint_options"}
    GenerationRequest(**rebuilt)


# ---------------------------------------------------------------------------------------------
# images


def _reopen(image: Image.Image, **save_kwargs) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, **save_kwargs)
    buffer.seek(0)
    return Image.open(buffer)


TEXT = 'a "cat", 猫 😀\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64'


def test_read_png_text_chunk():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", TEXT)
    assert read_infotext(_reopen(Image.new("RGB", (8, 8)), format="PNG", pnginfo=info)) == TEXT


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_read_exif_user_comment(fmt):
    opened = _reopen(Image.new("RGB", (8, 8)), format=fmt, exif=user_comment_exif(TEXT))
    assert read_infotext(opened) == TEXT


def test_user_comment_bytes_match_piexif_unicode_dump():
    exif = Image.Exif()
    exif.load(user_comment_exif("hé"))
    raw = exif.get_ifd(0x8769)[0x9286]
    assert raw == b"UNICODE\x00" + "hé".encode("utf-16-be")


@pytest.mark.parametrize(
    "raw",
    [
        b"UNICODE\x00" + TEXT.encode("utf-16-le"),  # little-endian writers
        b"UNICODE\x00\xfe\xff" + TEXT.encode("utf-16-be"),
        b"ASCII\x00\x00\x00" + TEXT.encode("utf-8"),
        TEXT.encode("utf-8"),  # no character code at all
    ],
)
def test_read_other_user_comment_encodings(raw):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = raw
    assert read_infotext(_reopen(Image.new("RGB", (8, 8)), format="JPEG", exif=exif.tobytes())) == TEXT


def test_image_without_infotext():
    assert read_infotext(_reopen(Image.new("RGB", (8, 8)), format="PNG")) is None
    assert read_infotext(_reopen(Image.new("RGB", (8, 8)), format="JPEG")) is None
    assert read_infotext(Image.new("RGB", (8, 8))) is None
