"""AND in the prompt (composable diffusion): A1111's split and weights, the UNet's rows, the guided
formula against direct UNet calls, and whole jobs on tiny real diffusers models (SD 1.x, SDXL)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modules.extensions.hooks import JobExtension, UNetStep
from modules.extensions.runner import ExtensionSet
from modules.generation.request import GenerationRequest, HiresOptions
from modules.infotext import read_infotext, request_fields_from_infotext
from modules.models.options import ModelOptions
from modules.models.registry import ModelRegistry
from modules.paths import Paths
from modules.processing import prompt_chunks, samplers
from modules.processing.composable import ComposableConditioning, guide, plan_sub_prompts
from modules.processing.conditioning import PromptEncoder, ScheduledConditioning
from modules.processing.engine import Engine
from modules.processing.prompt_parser import PromptSchedule, SubPrompt, split_and
from modules.processing.sampling import SamplingJob, denoise
from modules.settings import Options, SettingsStore
from tests.checkpoint_factory import make_checkpoint
from tests.tiny_model import FixedProvider, tiny_loaded_model

CIRCLE, SQUARE = "a red circle", "a blue square"


# ------------------------------------------------------------------------------------------------
# the split (A1111's get_multicond_prompt_list)


@pytest.mark.parametrize("prompt, expected", [
    ("a cat AND a dog", [("a cat", 1.0), (" a dog", 1.0)]),
    ("a cat AND a dog:1.2", [("a cat", 1.0), (" a dog", 1.2)]),
    ("a cat:0.5 AND a dog : 2 ", [("a cat", 0.5), (" a dog", 2.0)]),
    ("a cat:0.5AND a dog", [("a cat:0.5AND a dog", 1.0)]),  # \bAND\b: "5AND" is one word
    ("a cat :1. AND a dog:.25 AND x:-0.5", [("a cat", 1.0), (" a dog", 0.25), (" x", -0.5)]),
    ("a cat   AND   a dog   ", [("a cat", 1.0), ("   a dog", 1.0)]),  # trailing spaces cut, leading kept
    ("ANDROID and sANDy ANDes", [("ANDROID and sANDy ANDes", 1.0)]),  # no AND as a whole word
    ("a cat AND", [("a cat", 1.0), ("", 1.0)]),
    ("(a cat:1.2) AND [dog]", [("(a cat:1.2)", 1.0), (" [dog]", 1.0)]),  # emphasis is not a weight
    ("a cat: 1e3", [("a cat: 1e3", 1.0)]),  # not A1111's number form: text
    ("a cat\nAND\na dog:3", [("a cat", 1.0), ("\na dog", 3.0)]),
    ("line one\nline two:1.5 AND b", [("line one\nline two:1.5 ", 1.0), (" b", 1.0)]),  # A1111: '.' stops at \n
])
def test_split_and_cases(prompt, expected):
    assert [(s.text, s.weight) for s in split_and(prompt)] == expected


def test_a_lone_trailing_weight_is_read_and_a_plain_prompt_comes_back_verbatim():
    assert split_and("a cat:1.2") == (SubPrompt("a cat", 1.2),)  # as A1111: the lone prompt's weight
    for plain in ("a cat ", "  a (cat:1.3), [dog:cat:5] ", "", "a [cat|dog] BREAK x"):
        assert split_and(plain) == (SubPrompt(plain, 1.0),)


def test_prompt_editing_and_alternation_work_inside_a_sub_prompt():
    first, second = split_and("a [cat:dog:2] AND [red|blue] ball:0.7")
    assert (first.weight, second.weight) == (1.0, 0.7)
    assert PromptSchedule.parse(first.text, 4).as_lists() == [[2, "a cat"], [4, "a dog"]]
    assert PromptSchedule.parse(second.text, 3).texts == (" red ball", " blue ball", " red ball")
    # a weight after prompt editing belongs to the sub-prompt, the editing stays intact
    assert split_and("a [cat:dog:0.5]:1.5 AND b") == (SubPrompt("a [cat:dog:0.5]", 1.5), SubPrompt(" b", 1.0))


def test_plan_drops_weight_zero_and_fills_short_images():
    texts, weights = plan_sub_prompts(["a AND b:0 AND c:2", "d", "e:0 AND f:0"])
    assert texts == [["a", "d", "e"], [" c", "d", "e"]]
    assert weights == [[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]]


def test_guide_is_a1111s_formula_and_weight_zero_adds_exactly_nothing():
    torch.manual_seed(0)
    u, c1, c2 = torch.randn(3, 2, 4, 8, 8).unbind(0)
    weights = torch.tensor([[1.0, 1.0], [0.5, -1.0]])
    got = guide(torch.cat([u, c1, c2]), 2, (weights * 7.0)[..., None, None, None], has_uncond=True)
    expected = u + weights[0, :, None, None, None] * 7 * (c1 - u) + weights[1, :, None, None, None] * 7 * (c2 - u)
    assert torch.allclose(got, expected, atol=1e-5)
    zero = guide(torch.cat([u, c1, c2]), 2, torch.tensor([[7.0, 7.0], [0.0, 0.0]])[..., None, None, None], True)
    assert torch.equal(zero, u + 7.0 * (c1 - u))  # bit for bit the plain CFG arithmetic
    no_uncond = guide(torch.cat([c1, c2]), 2, torch.tensor([[0.25] * 2, [0.75] * 2])[..., None, None, None], False)
    assert torch.allclose(no_uncond, 0.25 * c1 + 0.75 * c2, atol=1e-6)


def test_unet_step_uncond_rows_default_is_half_with_cfg():
    sample = torch.zeros(6, 4, 8, 8)
    assert UNetStep(index=0, total=1, timestep=1, sample=sample, encoder_hidden_states=None, cfg=True).uncond_rows == 3
    assert UNetStep(index=0, total=1, timestep=1, sample=sample, encoder_hidden_states=None, cfg=False).uncond_rows == 0
    assert UNetStep(index=0, total=1, timestep=1, sample=sample, encoder_hidden_states=None, cfg=True,
                    uncond_rows=2).uncond_rows == 2


def test_token_count_of_a_positive_and_prompt_is_its_longest_sub_prompt():
    encoder = PromptEncoder.from_model(tiny_loaded_model(seed=0))
    long_text = ", ".join([CIRCLE] * 25)  # 99 tokens
    prompt = f"{long_text} AND {SQUARE}:0.5"
    split = prompt_chunks.count_tokens(prompt, 20, encoder._pieces, encoder.comma_id, composable=True)
    whole = prompt_chunks.count_tokens(prompt, 20, encoder._pieces, encoder.comma_id)  # negative prompts
    assert split == encoder.count_tokens(long_text) and (split.used, split.limit) == (99, 150)
    assert whole.used > split.used + 4  # "AND", the square and ":0.5" counted too


# ------------------------------------------------------------------------------------------------
# the guided prediction against direct UNet calls


@pytest.fixture(scope="module")
def tiny():
    return tiny_loaded_model(seed=0)


def _record_denoise(model, prompt: str, negative: str, cfg: float, steps: int = 2):
    """One real denoising loop; returns the UNet's inputs/outputs and what the scheduler was given."""
    encoder = PromptEncoder.from_model(model)
    scheduler = samplers.build_scheduler(samplers.resolve("Euler", "Automatic"), model.pipe.scheduler.config)
    seen: dict[str, list] = {"unet": [], "guided": []}
    original_step = scheduler.step

    def recording_step(model_output, *args, **kwargs):
        seen["guided"].append(model_output.clone())
        return original_step(model_output, *args, **kwargs)

    scheduler.step = recording_step
    def record(_module, args, kwargs, _out) -> None:
        seen["unet"].append((args[0].clone(), args[1], kwargs["encoder_hidden_states"].clone()))

    hook = model.unet.register_forward_hook(record, with_kwargs=True)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    job = SamplingJob(unet=model.unet, device=torch.device("cpu"), scheduler=scheduler,
                      cond=ComposableConditioning.from_prompts(encoder, [prompt], steps),
                      uncond=ScheduledConditioning(encoder, [negative], steps), cfg_scale=cfg, steps=steps,
                      noise=noise, generators=[torch.Generator().manual_seed(3)])
    try:
        with torch.inference_mode():
            denoise(job, lambda *a: None, lambda: False)
    finally:
        hook.remove()
    return encoder, seen


def _direct(model, sample, t, embeds) -> torch.Tensor:
    with torch.inference_mode():
        return model.unet(sample, t, encoder_hidden_states=embeds, return_dict=False)[0]


def test_guided_prediction_matches_the_formula_by_hand(tiny):
    texts, weights, negative, cfg = [CIRCLE, " a blue square", " green"], [1.0, 0.6, -0.3], "ugly", 5.0
    encoder, seen = _record_denoise(tiny, "a red circle AND a blue square:0.6 AND green:-0.3", negative, cfg)
    assert len(seen["unet"]) == 2 and len(seen["guided"]) == 2
    for (sample, t, embeds), guided in zip(seen["unet"], seen["guided"]):
        assert sample.shape[0] == 4  # [uncond, circle, square, green] for the one image
        rows = [encoder.encode(text).embeds for text in [negative, *texts]]
        assert torch.equal(embeds, torch.cat(rows))  # the row order the extensions are told
        u = _direct(tiny, sample[:1], t, rows[0])
        conds = [_direct(tiny, sample[:1], t, r) for r in rows[1:]]
        by_hand = u + sum(w * cfg * (c - u) for w, c in zip(weights, conds))
        assert torch.allclose(guided, by_hand, atol=1e-5), (guided - by_hand).abs().max()


def test_cfg_1_runs_uncond_only_when_the_weights_do_not_sum_to_1(tiny):
    encoder, seen = _record_denoise(tiny, "a red circle:0.75 AND a blue square:0.25", "ugly", 1.0, steps=1)
    (sample, t, _), guided = seen["unet"][0], seen["guided"][0]
    assert sample.shape[0] == 2  # no uncond rows: the formula is 0.75 c1 + 0.25 c2
    c1, c2 = (_direct(tiny, sample[:1], t, encoder.encode(x).embeds) for x in (CIRCLE, " a blue square"))
    assert torch.allclose(guided, 0.75 * c1 + 0.25 * c2, atol=1e-5)

    encoder, seen = _record_denoise(tiny, "a red circle AND a blue square", "ugly", 1.0, steps=1)
    (sample, t, _), guided = seen["unet"][0], seen["guided"][0]
    assert sample.shape[0] == 3  # weights sum to 2: uncond + (c1 - uncond) + (c2 - uncond)
    u, c1, c2 = (_direct(tiny, sample[:1], t, encoder.encode(x).embeds) for x in ("ugly", CIRCLE, " a blue square"))
    assert torch.allclose(guided, u + (c1 - u) + (c2 - u), atol=1e-5)


def test_sub_prompts_of_different_chunk_counts_are_padded(tiny):
    long_text = ", ".join(["a red circle on a blue background"] * 12)  # 96 tokens: 2 chunks
    encoder, seen = _record_denoise(tiny, f"{long_text} AND a blue square", "", 7.0, steps=1)
    sample, _, embeds = seen["unet"][0]
    chunks = encoder.encode(long_text).chunks
    assert chunks == 2 and embeds.shape[:2] == (3, 77 * chunks)
    padded = encoder.encode(" a blue square").pad_to_length(chunks).embeds
    assert torch.equal(embeds[2:], padded) and torch.isfinite(seen["guided"][0]).all()


# ------------------------------------------------------------------------------------------------
# whole jobs


@pytest.fixture(scope="module")
def models(tiny):
    return FixedProvider(tiny)


@pytest.fixture()
def engine(models, tmp_path):
    return Engine(models, SettingsStore(None), Paths(data_dir=tmp_path))


@pytest.fixture()
def per_image_engine(models, tmp_path):
    return Engine(models, SettingsStore(None, Options(batch_per_image=True)), Paths(data_dir=tmp_path))


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def txt2img(**fields) -> GenerationRequest:
    base = dict(prompt=CIRCLE, negative_prompt="blurry", seed=1234, steps=3, sampler_name="Euler a",
                save_images=False)
    return GenerationRequest(**{**base, **fields})


class RowRecorder(JobExtension):
    """Records each UNet call's rows as extensions see them."""

    name = "rows"
    always_on = True

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, bool]] = []

    def unet_step(self, job, batch, step: UNetStep, args) -> None:
        self.seen.append((step.sample.shape[0], step.uncond_rows, step.cfg))


@pytest.mark.parametrize("cfg", [7.0, 1.0])
def test_and_with_one_side_at_weight_0_equals_the_other_side_alone(engine, cfg):
    alone = engine.generate(txt2img(cfg_scale=cfg, batch_size=2))
    for prompt in (f"{CIRCLE} AND {SQUARE}:0", f"{SQUARE}:0 AND {CIRCLE}", f"{CIRCLE}:1 AND {SQUARE}:0.0"):
        both = engine.generate(txt2img(prompt=prompt, cfg_scale=cfg, batch_size=2))
        for a, b in zip(alone.images, both.images):
            assert np.array_equal(px(a), px(b)), prompt
    # the weighted path itself: a tiny weight stays within batched-kernel rounding of the lone prompt
    near = engine.generate(txt2img(prompt=f"{CIRCLE} AND {SQUARE}:0.0001", cfg_scale=cfg, batch_size=2))
    for a, b in zip(alone.images, near.images):
        assert np.abs(px(a) - px(b)).max() <= 2


def test_two_sub_prompts_change_the_picture_and_weights_matter(engine):
    alone = px(engine.generate(txt2img()).images[0])
    both = px(engine.generate(txt2img(prompt=f"{CIRCLE} AND {SQUARE}")).images[0])
    heavier = px(engine.generate(txt2img(prompt=f"{CIRCLE} AND {SQUARE}:1.5")).images[0])
    assert np.abs(alone - both).mean() > 1 and np.abs(both - heavier).mean() > 1


def test_rows_extensions_see(models, tmp_path):
    recorder = RowRecorder()
    engine = Engine(models, SettingsStore(None), Paths(data_dir=tmp_path), extensions=ExtensionSet([recorder]))
    engine.generate(txt2img(batch_size=2, steps=1))
    engine.generate(txt2img(prompt=f"{CIRCLE} AND {SQUARE} AND x:0.5", batch_size=2, steps=1))
    engine.generate(txt2img(prompt=f"{CIRCLE}:0.5 AND {SQUARE}:0.5", cfg_scale=1.0, batch_size=2, steps=1))
    engine.generate(txt2img(prompt=f"{CIRCLE} AND {SQUARE}:0", batch_size=2, steps=1))
    assert recorder.seen == [(4, 2, True), (8, 2, True), (4, 0, False), (4, 2, True)]


def test_and_with_batch_per_image_equals_lone_jobs(per_image_engine):
    prompt = f"{CIRCLE} AND {SQUARE}:0.7"
    batch = per_image_engine.generate(txt2img(prompt=prompt, seed=50, batch_size=2))
    for i, image in enumerate(batch.images):
        lone = per_image_engine.generate(txt2img(prompt=prompt, seed=50 + i))
        assert np.array_equal(px(image), px(lone.images[0])), i


class PerImagePrompts(JobExtension):
    """Gives each image its own prompt, as scripts do (A1111's p.all_prompts)."""

    name = "per-image"

    def __init__(self, prompts: list[str]) -> None:
        self.prompts = prompts

    def process(self, job, args) -> None:
        job.all_prompts = list(self.prompts)


def test_images_with_different_sub_prompt_counts_share_a_batch(models, tmp_path):
    prompts = [f"{CIRCLE} AND {SQUARE}", SQUARE]
    ext = PerImagePrompts(prompts)
    settings = SettingsStore(None, Options(batch_per_image=True))
    engine = Engine(models, settings, Paths(data_dir=tmp_path), extensions=ExtensionSet([ext]))
    batch = engine.generate(txt2img(seed=60, batch_size=2, extensions={"per-image": {}}))
    assert [text.splitlines()[0] for text in batch.infotexts] == prompts
    lone = [engine.generate(txt2img(prompt=p, seed=60 + i)) for i, p in enumerate(prompts)]
    # image 0 runs exactly its lone rows; image 1 also gets a weight-0 filler row (adds nothing)
    assert np.array_equal(px(batch.images[0]), px(lone[0].images[0]))
    assert np.abs(px(batch.images[1]) - px(lone[1].images[0])).max() <= 2


def test_nine_channel_inpaint_model_repeats_its_extra_channels_per_sub_prompt(tmp_path):
    inpaint = FixedProvider(tiny_loaded_model(seed=5, in_channels=9, name="tiny-inpaint"))
    engine = Engine(inpaint, SettingsStore(None), Paths(data_dir=tmp_path))
    alone = engine.generate(txt2img(batch_size=2))
    zero = engine.generate(txt2img(prompt=f"{CIRCLE} AND {SQUARE}:0", batch_size=2))
    both = engine.generate(txt2img(prompt=f"{CIRCLE} AND {SQUARE}", batch_size=2))
    for a, z, b in zip(alone.images, zero.images, both.images):
        assert np.array_equal(px(a), px(z)) and not np.array_equal(px(a), px(b))


def test_infotext_keeps_the_prompt_as_written_and_round_trips(models, tmp_path):
    engine = Engine(models, SettingsStore(None), Paths(data_dir=tmp_path))
    prompt = "a [red:green:2] circle AND  a blue square:1.2 AND (sky:1.1):-0.2"
    first = engine.generate(txt2img(prompt=prompt, save_images=True, seed=9))
    text = read_infotext(Image.open(first.saved_paths[0]))
    assert text.splitlines()[0] == prompt
    fields = request_fields_from_infotext(text)
    assert fields["prompt"] == prompt
    again = engine.generate(GenerationRequest(**{**fields, "save_images": False}))
    assert np.array_equal(px(first.images[0]), px(again.images[0]))


def test_hires_second_pass_follows_an_and_hires_prompt(engine):
    def run(hr_prompt: str):
        hires = HiresOptions(scale=1.5, upscaler="Latent", second_pass_steps=2, prompt=hr_prompt)
        return px(engine.generate(txt2img(hires=hires, denoising_strength=0.9, steps=2)).images[0])

    alone = run(CIRCLE)
    assert alone.shape == (96, 96, 3)
    assert np.array_equal(alone, run(f"{CIRCLE} AND {SQUARE}:0"))
    assert np.abs(alone - run(f"{CIRCLE} AND {SQUARE}")).mean() > 1
    # the first pass's AND prompt carries into the second pass when hr_prompt is empty
    first_and = GenerationRequest(**{**txt2img().model_dump(), "prompt": f"{CIRCLE} AND {SQUARE}:0",
                                     "hires": HiresOptions(scale=1.5, second_pass_steps=2),
                                     "denoising_strength": 0.9, "steps": 2})
    plain = first_and.model_copy(update={"prompt": CIRCLE})
    assert np.array_equal(px(engine.generate(first_and).images[0]), px(engine.generate(plain).images[0]))


# ------------------------------------------------------------------------------------------------
# SDXL: pooled embeds and time_ids follow the sub-prompts


@pytest.fixture(scope="module")
def sdxl_registry(tmp_path_factory) -> ModelRegistry:
    root = tmp_path_factory.mktemp("and-sdxl")
    make_checkpoint(root / "models" / "Stable-diffusion" / "tiny_sdxl.safetensors", "sdxl", seed=4)
    return ModelRegistry(Paths(data_dir=root), ModelOptions(device="cpu"), embedded_dir=None)


def test_sdxl_pooled_embeds_and_time_ids_follow_the_sub_prompts(sdxl_registry, tmp_path):
    model = sdxl_registry.get("tiny_sdxl.safetensors")
    engine = Engine(sdxl_registry, SettingsStore(None), Paths(data_dir=tmp_path))
    calls = []
    hook = model.unet.register_forward_hook(
        lambda _m, args, kwargs, out: calls.append({k: v.clone() for k, v in kwargs["added_cond_kwargs"].items()}),
        with_kwargs=True)
    base = dict(checkpoint="tiny_sdxl.safetensors", width=64, height=64, steps=2)
    try:
        both = engine.generate(txt2img(prompt=f"{CIRCLE} AND {SQUARE}:0.5", batch_size=2, **base))
    finally:
        hook.remove()
    encoder = PromptEncoder.from_model(model)
    pooled = [encoder.encode(t).pooled for t in ("blurry", CIRCLE, " a blue square")]
    added = calls[0]
    assert added["text_embeds"].shape[0] == 6 and added["time_ids"].shape[0] == 6
    assert torch.equal(added["text_embeds"], torch.cat([p.expand(2, -1) for p in pooled]))
    assert torch.equal(added["time_ids"], torch.tensor([[64, 64, 0, 0, 64, 64]] * 6, dtype=added["time_ids"].dtype))
    alone = engine.generate(txt2img(batch_size=2, **base))
    zero = engine.generate(txt2img(prompt=f"{CIRCLE} AND {SQUARE}:0", batch_size=2, **base))
    for a, b, c in zip(alone.images, zero.images, both.images):
        assert np.array_equal(px(a), px(b)) and not np.array_equal(px(a), px(c))
