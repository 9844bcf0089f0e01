"""The engine's extension seams on tiny real diffusers components: each hook runs at its phase,
changes what it should, and every patch is undone; a failing hook ends only its own job."""

from __future__ import annotations

from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from pydantic import BaseModel

from diffusers import ControlNetModel

from modules.extensions.hooks import JobExtension, OutputImage, UNetStep
from modules.extensions.runner import ExtensionArgsError, ExtensionHookError, ExtensionSet, UnknownExtensionError
from modules.generation.request import GenerationRequest
from modules.infotext import parse_infotext, read_infotext
from modules.jobs.control import JobControl
from modules.paths import Paths
from modules.processing.engine import Engine
from modules.settings import SettingsStore
from tests.tiny_model import FixedProvider, tiny_loaded_model


@pytest.fixture(scope="module")
def models():
    return FixedProvider(tiny_loaded_model(seed=0))


def engine_with(models, tmp_path, *extensions: JobExtension, on_image_saved=None) -> Engine:
    return Engine(models, SettingsStore(None), Paths(data_dir=tmp_path), extensions=ExtensionSet(extensions),
                  on_image_saved=on_image_saved)


def request(**fields) -> GenerationRequest:
    base = dict(prompt="a red circle", seed=77, steps=3, sampler_name="Euler", save_images=False)
    return GenerationRequest(**{**base, **fields})


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# ---------------------------------------------------------------------------------------------
# extensions used by the tests


class ControlArgs(BaseModel):
    enabled: bool = True
    scale: float = 1.0


class TinyControlNet(JobExtension):
    """A real diffusers ControlNet made from the tiny UNet, fed through `unet_step` every step:
    the seam the ControlNet extension uses."""

    name = "tiny-controlnet"
    Args = ControlArgs

    def __init__(self, unet, zero: bool, per_row: bool = False) -> None:
        self.per_row = per_row  # one ControlNet call per row: a row's residuals do not depend on the batch
        torch.manual_seed(3)
        self.net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8))
        if not zero:  # a trained ControlNet's zero convolutions are no longer zero
            with torch.no_grad():
                for conv in [*self.net.controlnet_down_blocks, self.net.controlnet_mid_block]:
                    conv.weight.normal_(0, 0.2)
        self.calls: list[tuple[int, int, bool]] = []

    def unet_step(self, job, batch, step: UNetStep, args) -> None:
        self.calls.append((step.index, step.sample.shape[0], step.cfg))
        rows = [slice(i, i + 1) for i in range(step.sample.shape[0])] if self.per_row else [slice(None)]
        outs = []
        for r in rows:
            hint = torch.full((step.sample[r].shape[0], 3, job.height, job.width), 0.5)
            outs.append(self.net(step.sample[r], step.timestep, encoder_hidden_states=step.encoder_hidden_states[r],
                                 controlnet_cond=hint, conditioning_scale=args.scale, return_dict=False))
        down = [torch.cat([o[0][k] for o in outs]) for k in range(len(outs[0][0]))]
        mid = torch.cat([o[1] for o in outs])
        step.unet_kwargs["down_block_additional_residuals"] = down
        step.unet_kwargs["mid_block_additional_residual"] = mid


class PromptSuffix(JobExtension):
    name = "suffix"
    title = "Prompt Suffix"
    always_on = False

    class Args(BaseModel):
        text: str = ""

    def process(self, job, args) -> None:
        job.all_prompts = [p + args.text for p in job.all_prompts]
        job.extra_params["Suffix"] = args.text.strip(", ")


class Invert(JobExtension):
    name = "invert"

    def postprocess_image(self, job, image: OutputImage, args) -> None:
        image.image = ImageOps.invert(image.image.convert("RGB"))
        image.extra_params["Inverted"] = image.index


class TagHandler(JobExtension):
    """Consumes <shade:name:weight> tags; records what it saw."""

    name = "shade"
    extra_network = "shade"
    always_on = True

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self.encoder_prompts: list[list[str]] = []

    def process_batch(self, job, batch, args):
        self.seen += [(c.name, c.number(1, 1.0)) for c in batch.extra_networks if c.kind == "shade"]
        self.encoder_prompts.append(list(batch.encoder_prompts))
        return None


class ScaleConvIn(JobExtension):
    """Patches a UNet weight for the job (or for each batch) and must always put it back."""

    name = "scale"

    class Args(BaseModel):
        factor: float = 2.0
        per_batch: bool = False
        fail_in: str = ""  # a hook to fail in after patching

    @contextmanager
    def _patched(self, job, factor: float):
        weight = job.model.unet.conv_in.weight
        saved = weight.detach().clone()
        with torch.inference_mode():
            weight.mul_(factor)
        try:
            yield
        finally:
            with torch.inference_mode():
                weight.copy_(saved)

    def patch_model(self, job, args):
        return None if args.per_batch else self._patched(job, args.factor)

    def process_batch(self, job, batch, args):
        if args.fail_in == "process_batch":
            raise RuntimeError("boom in process_batch")
        return self._patched(job, args.factor) if args.per_batch else None

    def postprocess_image(self, job, image, args) -> None:
        if args.fail_in == "postprocess_image":
            raise RuntimeError("boom in postprocess_image")


# ---------------------------------------------------------------------------------------------
# tests


def test_no_extensions_and_an_idle_extension_give_the_same_pixels(models, tmp_path):
    plain = Engine(models, SettingsStore(None), Paths(data_dir=tmp_path)).generate(request())
    idle = engine_with(models, tmp_path, TinyControlNet(models.get().unet, zero=False), Invert()).generate(request())
    assert np.array_equal(px(plain.images[0]), px(idle.images[0]))


def test_unet_step_residuals_zero_equals_off_and_trained_ones_change_the_picture(models, tmp_path):
    unet = models.get().unet
    zero, trained = TinyControlNet(unet, zero=True), TinyControlNet(unet, zero=False)
    zero.name, trained.name = "zero", "trained"
    engine = engine_with(models, tmp_path, zero, trained)
    off = engine.generate(request(batch_size=2))
    with_zero = engine.generate(request(batch_size=2, extensions={"zero": {}}))
    with_trained = engine.generate(request(batch_size=2, extensions={"trained": {}}))
    scale_0 = engine.generate(request(batch_size=2, extensions={"trained": {"scale": 0.0}}))
    for a, b, c in zip(off.images, with_zero.images, scale_0.images):
        assert np.array_equal(px(a), px(b)) and np.array_equal(px(a), px(c))
    assert np.abs(px(off.images[0]) - px(with_trained.images[0])).mean() > 1
    # one call per step with the whole CFG batch (2 images x uncond+cond)
    assert zero.calls == [(0, 4, True), (1, 4, True), (2, 4, True)]


def test_residuals_split_by_rows_when_the_unet_runs_per_image(models, tmp_path):
    settings = SettingsStore(None)
    settings.update({"batch_per_image": True})
    # per-row ControlNet calls: batched kernels round differently by batch size and thread count, and
    # what is checked here is the engine's split of the residuals, not the ControlNet's rounding
    control = TinyControlNet(models.get().unet, zero=False, per_row=True)
    engine = Engine(models, settings, Paths(data_dir=tmp_path), extensions=ExtensionSet([control]))
    args = {"tiny-controlnet": {}}
    batch = engine.generate(request(batch_size=2, extensions=args))
    lone = engine.generate(request(seed=78, extensions=args))
    assert np.array_equal(px(batch.images[1]), px(lone.images[0]))


def test_process_hook_changes_the_prompt_like_sending_it(models, tmp_path):
    engine = engine_with(models, tmp_path, PromptSuffix())
    hooked = engine.generate(request(extensions={"PROMPT SUFFIX": {"text": ", blue"}}))
    direct = engine.generate(request(prompt="a red circle, blue"))
    assert np.array_equal(px(hooked.images[0]), px(direct.images[0]))
    params = parse_infotext(hooked.infotexts[0]).params
    assert parse_infotext(hooked.infotexts[0]).prompt == "a red circle, blue"
    assert params["Suffix"] == "blue"
    assert hooked.params[0].extra["Suffix"] == "blue"


def test_postprocess_image_replaces_the_saved_image_and_adds_infotext(models, tmp_path):
    saved = []
    engine = engine_with(models, tmp_path, Invert(), on_image_saved=saved.append)
    plain = engine.generate(request(save_images=True, batch_size=2))
    inverted = engine.generate(request(save_images=True, batch_size=2, extensions={"invert": {}}))
    for a, b in zip(plain.images, inverted.images):
        assert np.array_equal(px(b), 255 - px(a))
    on_disk = Image.open(inverted.saved_paths[1])
    assert np.array_equal(px(on_disk), px(inverted.images[1]))
    assert parse_infotext(read_infotext(on_disk)).params["Inverted"] == "1"
    assert [s.path for s in saved[2:]] == inverted.saved_paths and saved[3].image.index == 1


def test_extra_network_tags_reach_their_extension_not_the_text_encoder(models, tmp_path):
    handler = TagHandler()
    engine = engine_with(models, tmp_path, handler)
    tagged = engine.generate(request(prompt="a red circle <shade:night:0.5>", negative_prompt="<other:x>blurry"))
    clean = engine.generate(request(prompt="a red circle ", negative_prompt="blurry"))
    assert np.array_equal(px(tagged.images[0]), px(clean.images[0]))
    assert handler.seen == [("night", 0.5)]
    assert handler.encoder_prompts[0] == ["a red circle "]
    assert parse_infotext(tagged.infotexts[0]).prompt == "a red circle <shade:night:0.5>"  # infotext keeps tags
    assert any("<other:...>" in w for w in tagged.warnings)  # no extension handles it
    assert not any("<shade:...>" in w for w in tagged.warnings)


@pytest.mark.parametrize("per_batch", [False, True])
def test_model_patches_apply_and_are_undone(models, tmp_path, per_batch):
    engine = engine_with(models, tmp_path, ScaleConvIn())
    weight = models.get().unet.conv_in.weight
    before = weight.detach().clone()
    plain = engine.generate(request(batch_count=2))
    patched = engine.generate(request(batch_count=2, extensions={"scale": {"per_batch": per_batch}}))
    assert torch.equal(weight, before)
    assert not np.array_equal(px(plain.images[1]), px(patched.images[1]))
    again = engine.generate(request(batch_count=2))
    assert np.array_equal(px(plain.images[1]), px(again.images[1]))


@pytest.mark.parametrize("hook", ["process_batch", "postprocess_image"])
def test_a_failing_hook_ends_its_job_cleanly_and_the_next_job_is_unaffected(models, tmp_path, hook):
    engine = engine_with(models, tmp_path, ScaleConvIn())
    weight = models.get().unet.conv_in.weight
    before = weight.detach().clone()
    reference = engine.generate(request(save_images=True))
    files_before = sorted(tmp_path.rglob("*.png"))
    with pytest.raises(ExtensionHookError, match=f"'scale' failed in {hook}") as err:
        engine.generate(request(save_images=True, extensions={"scale": {"per_batch": True, "fail_in": hook}}))
    assert err.value.extension == "scale" and err.value.hook == hook
    assert torch.equal(weight, before)  # the batch patch was undone on the way out
    assert sorted(tmp_path.rglob("*.png")) == files_before  # no half-finished output
    after = engine.generate(request(save_images=True))
    assert np.array_equal(px(after.images[0]), px(reference.images[0]))


def test_patches_are_undone_when_a_job_is_interrupted(models, tmp_path):
    engine = engine_with(models, tmp_path, ScaleConvIn())
    weight = models.get().unet.conv_in.weight
    before = weight.detach().clone()
    control = JobControl()
    control.interrupt()
    result = engine.generate(request(batch_count=2, extensions={"scale": {}}), control)
    assert result.interrupted and torch.equal(weight, before)


def test_unknown_extension_and_bad_args_fail_before_the_model_loads(models, tmp_path):
    engine = engine_with(models, tmp_path, PromptSuffix())
    with pytest.raises(UnknownExtensionError, match="'nope'"):
        engine.generate(request(extensions={"nope": {}}))
    with pytest.raises(ExtensionArgsError, match="suffix"):
        engine.generate(request(extensions={"suffix": {"text": ["not", "text"]}}))
