"""`Engine.generate`: the one function every front end ends in.

    request → model → seeds → for each batch: conditioning → noise → denoise → decode
            → composite → infotext → save

Each step lives in its own module; this file only puts them in order.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Optional

import torch
from PIL import Image

from modules import infotext as infotext_mod
from modules import outputs
from modules.jobs.control import JobControl
from modules.models.loaded import LoadedModel, ModelProvider
from modules.models.vae_decode import decode_latents, unscale_latents
from modules.paths import Paths
from modules.processing import image_ops, latents as latent_ops, samplers
from modules.processing.conditioning import PromptEncoder, ScheduledConditioning
from modules.processing.noise import JobSeeds, NoiseSpec, create_noise, resolve_seeds
from modules.processing.request import GenerationRequest, GenerationResult, MaskedContent, Mode, Timings
from modules.processing.sampling import LatentInpaint, SamplingJob, denoise
from modules.settings import Options, SettingsStore

log = logging.getLogger(__name__)


@dataclass
class _Clock:
    """Accumulates wall time per phase of a job."""

    spent: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.spent[phase] = self.spent.get(phase, 0.0) + now - since
        return now


@dataclass
class _BatchInputs:
    """What one batch needs besides the seeds: init latents and inpaint state."""

    init_latents: Optional[torch.Tensor] = None
    inpaint: Optional[LatentInpaint] = None
    prepared: list[image_ops.PreparedInpaint] = field(default_factory=list)
    passthrough: list[Image.Image] = field(default_factory=list)  # img2img at strength 0
    warnings: list[str] = field(default_factory=list)  # e.g. a mask resized to its image


class Engine:
    def __init__(self, models: ModelProvider, settings: SettingsStore, paths: Paths,
                 vae_tile_threshold: Optional[int] = None) -> None:
        self._models = models
        self._vae_tile_threshold = vae_tile_threshold  # None: decode_latents' default
        self._settings = settings
        self._paths = paths
        self._encoders: "weakref.WeakKeyDictionary[object, PromptEncoder]" = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ entry point
    def generate(self, request: GenerationRequest, control: Optional[JobControl] = None) -> GenerationResult:
        control = control or JobControl()
        options = self._settings.get()
        clock = _Clock()
        t = job_start = time.perf_counter()

        choice = samplers.resolve(request.sampler_name, request.scheduler)  # fail fast on bad names
        model = self._models.get(request.checkpoint, request.vae)
        t = clock.add("load", t)

        width = request.width or model.native_size
        height = request.height or model.native_size
        seeds = resolve_seeds(request)
        encoder = self._encoder(model)
        result = GenerationResult(width=width, height=height, sampler_name=choice.sampler.name,
                                  scheduler=choice.schedule.name, model_title=model.title)
        if choice.sampler.note:
            result.warnings.append(f"{choice.sampler.name}: {choice.sampler.note}")
        result.warnings.extend(_step_options(request, choice, options).warnings)

        control.start(request.batch_count, request.steps)
        with torch.inference_mode():
            for batch_index in range(request.batch_count):
                if control.interrupted:
                    result.interrupted = True
                    break
                lo, hi = batch_index * request.batch_size, (batch_index + 1) * request.batch_size
                batch_seeds = JobSeeds(seeds.seeds[lo:hi], seeds.subseeds[lo:hi])
                images = self._run_batch(request, model, choice, encoder, batch_seeds, batch_index,
                                         width, height, control, clock, result,
                                         per_image=options.batch_per_image,
                                         mask_weight=options.inpainting_mask_weight)
                t = time.perf_counter()
                self._finish_images(request, model, choice, images, batch_seeds, width, height, options, result)
                clock.add("save", t)
                control.take_skip()
            if control.interrupted:
                result.interrupted = True

        t = time.perf_counter()
        self._save_grid(request, options, result)
        clock.add("save", t)
        result.timings = Timings(total_s=time.perf_counter() - job_start, load_s=clock.spent.get("load", 0.0),
                                 encode_s=clock.spent.get("encode", 0.0), sample_s=clock.spent.get("sample", 0.0),
                                 decode_s=clock.spent.get("decode", 0.0), save_s=clock.spent.get("save", 0.0))
        log.info("%s %dx%d, %d steps, %s (%s): %d image(s) in %.1f s%s", request.mode.value, width, height,
                 request.steps, choice.sampler.name, choice.schedule.name, len(result.images),
                 result.timings.total_s, " (interrupted)" if result.interrupted else "")
        return result

    # ------------------------------------------------------------------ one batch
    def _run_batch(self, request: GenerationRequest, model: LoadedModel, choice: samplers.SamplerChoice,
                   encoder: PromptEncoder,
                   seeds: JobSeeds, batch_index: int, width: int, height: int, control: JobControl,
                   clock: _Clock, result: GenerationResult, per_image: bool = False,
                   mask_weight: float = 1.0) -> list[Image.Image]:
        t = time.perf_counter()
        n = len(seeds.seeds)
        cond = ScheduledConditioning(encoder, [request.prompt] * n, request.steps, request.clip_skip)
        uncond = ScheduledConditioning(encoder, [request.negative_prompt] * n, request.steps, request.clip_skip)
        inputs = self._prepare_inputs(request, model, seeds, batch_index * request.batch_size, width, height,
                                      mask_weight)
        result.warnings.extend(w for w in dict.fromkeys(inputs.warnings) if w not in result.warnings)
        if inputs.passthrough:
            clock.add("encode", t)
            return inputs.passthrough

        factor = model.vae_scale_factor
        latent_shape = (model.latent_channels, height // factor, width // factor)
        resize_from = None
        if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0:
            resize_from = (request.seed_resize_from_h // factor, request.seed_resize_from_w // factor)
        spec = NoiseSpec(shape=latent_shape, subseed_strength=request.subseed_strength, resize_from=resize_from,
                         source=request.rng_source)
        noise, generators = create_noise(spec, seeds.seeds, seeds.subseeds, model.device)
        start_latents = self._masked_content_start(request, inputs, noise)
        scheduler = samplers.build_scheduler(choice, model.pipe.scheduler.config, seeds=seeds.seeds,
                                             is_sdxl=model.family.is_xl)
        job = SamplingJob(unet=model.unet, device=model.device, scheduler=scheduler, cond=cond, uncond=uncond,
                          cfg_scale=request.cfg_scale, steps=request.steps, noise=noise, generators=generators,
                          init_latents=inputs.init_latents, start_latents=start_latents,
                          strength=1.0 if request.mode is Mode.TXT2IMG else request.denoising_strength,
                          inpaint=inputs.inpaint, time_ids=self._time_ids(model, width, height),
                          unet_per_image=per_image,
                          step_options=_step_options(request, choice, self._settings.get()).kwargs)
        t = clock.add("encode", t)

        def on_step(step: int, total: int, preview_latents) -> None:
            control.report_step(batch_index, step, total,
                                lambda: latent_ops.latent_preview(model.vae, preview_latents(), model.family.is_xl))

        outcome = denoise(job, on_step, lambda: control.interrupted or control.skip_requested)
        if outcome.stopped_early:
            what = "interrupted" if control.interrupted else "skipped"
            result.warnings.append(f"batch {batch_index + 1} {what} at step {outcome.steps_done}/{outcome.total_steps}")
        t = clock.add("sample", t)

        decoded = self._decode(model, outcome.latents, result, per_image)
        if inputs.prepared:
            decoded = [image_ops.composite_inpaint(img, prep) for img, prep in zip(decoded, inputs.prepared)]
        clock.add("decode", t)
        return decoded

    def _prepare_inputs(self, request: GenerationRequest, model: LoadedModel, seeds: JobSeeds,
                        first_index: int, width: int, height: int, mask_weight: float = 1.0) -> _BatchInputs:
        n = len(seeds.seeds)
        if request.mode is Mode.TXT2IMG:
            if not model.is_inpainting:
                return _BatchInputs()
            # 9-channel models sample txt2img with everything masked, as A1111 does.
            blank = [Image.new("RGB", (width, height), (127, 127, 127))] * n
            full = [Image.new("L", (width, height), 255)] * n
            return _BatchInputs(inpaint=self._latent_inpaint(model, blank, full, blend=False))

        # image k of the whole job starts from init_images[k % len(init_images)]
        sources = [request.init_images[(first_index + j) % len(request.init_images)] for j in range(n)]
        if request.mode is Mode.IMG2IMG:
            resized = [image_ops.resize_image(img.convert("RGB"), width, height, request.resize_mode)
                       for img in sources]
            if request.denoising_strength == 0.0:
                return _BatchInputs(passthrough=resized)
            init = latent_ops.encode_images(model.vae, latent_ops.pil_to_tensor(resized))
            inpaint = None
            if model.is_inpainting:
                full = [Image.new("L", (width, height), 255)] * n  # A1111: img2img masks everything
                inpaint = self._latent_inpaint(model, resized, full, blend=False, mask_weight=mask_weight)
            return _BatchInputs(init_latents=init, inpaint=inpaint)

        prepared = [image_ops.prepare_inpaint(img, request.inpaint, width, height, request.resize_mode)
                    for img in sources]
        work = [p.image for p in prepared]
        notes = [p.warning for p in prepared if p.warning]
        if request.denoising_strength == 0.0:
            return _BatchInputs(passthrough=[p.original for p in prepared], warnings=notes)
        init = latent_ops.encode_images(model.vae, latent_ops.pil_to_tensor(work))
        masks = [p.mask for p in prepared]
        inpaint = self._latent_inpaint(model, work, masks, blend=not model.is_inpainting, mask_weight=mask_weight)
        return _BatchInputs(init_latents=init, inpaint=inpaint, prepared=prepared, warnings=notes)

    def _latent_inpaint(self, model: LoadedModel, images: list[Image.Image], masks: list[Image.Image],
                        blend: bool, mask_weight: float = 1.0) -> LatentInpaint:
        factor = model.vae_scale_factor
        mask = latent_ops.mask_to_tensor(masks)
        latent_mask = torch.nn.functional.interpolate(mask, size=(mask.shape[-2] // factor, mask.shape[-1] // factor))
        masked_latents = None
        if model.is_inpainting:
            # A1111's inpainting_mask_weight: the masked part of the picture fades out by this much
            # (1: hidden, today's and A1111's default; 0: the model sees the whole picture)
            pixels = latent_ops.pil_to_tensor(images) * (1.0 - mask_weight * (mask >= 0.5))
            masked_latents = latent_ops.encode_images(model.vae, pixels)
        return LatentInpaint(mask=latent_mask.to(model.device), masked_image_latents=masked_latents, blend=blend)

    @staticmethod
    def _masked_content_start(request: GenerationRequest, inputs: _BatchInputs,
                              noise: torch.Tensor) -> Optional[torch.Tensor]:
        """A1111's 'latent noise' / 'latent nothing': replace the masked part of the start latents."""
        if request.mode is not Mode.INPAINT or inputs.init_latents is None or inputs.inpaint is None:
            return None
        content = request.inpaint.masked_content
        mask = inputs.inpaint.mask.to(inputs.init_latents.device, inputs.init_latents.dtype)
        keep = inputs.init_latents * (1 - mask)
        if content is MaskedContent.LATENT_NOISE:
            return keep + noise.to(keep.device, keep.dtype) * mask
        if content is MaskedContent.LATENT_NOTHING:
            return keep
        return None

    @staticmethod
    def _time_ids(model: LoadedModel, width: int, height: int) -> Optional[torch.Tensor]:
        """SDXL's size/crop micro-conditioning (refiner: aesthetic score instead of target size)."""
        config = model.unet.config
        if getattr(config, "addition_embed_type", None) != "text_time":
            return None
        per_id = config.addition_time_embed_dim
        pooled_dim = model.pipe.text_encoder_2.config.projection_dim
        n_ids = (config.projection_class_embeddings_input_dim - pooled_dim) // per_id
        if n_ids == 5:  # refiner
            cond, uncond = [height, width, 0, 0, 6.0], [height, width, 0, 0, 2.5]
        else:
            cond = uncond = [height, width, 0, 0, height, width]
        return torch.tensor([uncond, cond], dtype=torch.float32)

    def _decode(self, model: LoadedModel, latents: torch.Tensor, result: GenerationResult,
                per_image: bool = False) -> list[Image.Image]:
        """The whole batch in one VAE pass, or (`per_image`, the `batch_per_image` setting) one image
        at a time: a batched pass rounds differently from a lone one, so only then does image i
        equal the lone job with its seed; it also caps the decode's peak memory."""
        images = []
        scaled = unscale_latents(model.vae, latents)
        for one in (scaled.split(1) if per_image else (scaled,)):
            outcome = decode_latents(model.vae, one, self._vae_tile_threshold)
            if outcome.warning and outcome.warning not in result.warnings:
                result.warnings.append(outcome.warning)
            images.extend(latent_ops.tensor_to_pil(outcome.images))
        return images

    # ------------------------------------------------------------------ results
    def _finish_images(self, request: GenerationRequest, model: LoadedModel, choice: samplers.SamplerChoice,
                       images: list[Image.Image], seeds: JobSeeds, width: int, height: int, options: Options,
                       result: GenerationResult) -> None:
        for image, seed, subseed in zip(images, seeds.seeds, seeds.subseeds):
            params = infotext_mod.ImageParams(
                prompt=request.prompt, negative_prompt=request.negative_prompt, seed=seed, subseed=subseed,
                width=width, height=height, sampler_name=choice.sampler.name, scheduler=choice.schedule.name,
                model_name=model.name, model_hash=model.short_hash, vae_name=model.vae_name,
                vae_hash=model.vae_hash, extra=_step_options(request, choice, options).infotext)
            text = infotext_mod.build_infotext(request, params)
            result.images.append(image)
            result.seeds.append(seed)
            result.subseeds.append(subseed)
            result.prompts.append(request.prompt)
            result.negative_prompts.append(request.negative_prompt)
            result.infotexts.append(text)
            if request.save_images and options.samples_save:
                path = outputs.save_image(image, kind=_kind(request), seed=seed, prompt=request.prompt,
                                          infotext=text, settings=save_settings(options, request),
                                          base_dir=self._paths.outputs_dir)
                result.saved_paths.append(str(path))

    def _save_grid(self, request: GenerationRequest, options: Options, result: GenerationResult) -> None:
        if len(result.images) < 2 or not (request.save_grid and options.grid_save):
            return
        result.grid = outputs.make_grid(result.images)
        if request.save_images:
            path = outputs.save_image(result.grid, kind=_kind(request), seed=result.seeds[0], prompt=request.prompt,
                                      infotext=result.infotexts[0], settings=save_settings(options, request),
                                      base_dir=self._paths.outputs_dir, is_grid=True)
            result.grid_path = str(path)

    def _encoder(self, model: LoadedModel) -> PromptEncoder:
        encoder = self._encoders.get(model.pipe)
        if encoder is None:
            encoder = PromptEncoder.from_model(model)
            self._encoders[model.pipe] = encoder
        return encoder


def _step_options(request: GenerationRequest, choice: samplers.SamplerChoice,
                  options: Options) -> samplers.StepOptions:
    params = samplers.SamplerParams(eta=request.eta, s_churn=request.s_churn, s_tmin=request.s_tmin,
                                    s_tmax=request.s_tmax, s_noise=request.s_noise)
    return samplers.step_options(choice.sampler, params, eta_ancestral=getattr(options, "eta_ancestral", 1.0),
                                 eta_ddim=getattr(options, "eta_ddim", 0.0))


def _kind(request: GenerationRequest) -> str:
    return "txt2img" if request.mode is Mode.TXT2IMG else "img2img"


def save_settings(options: Options, request: GenerationRequest) -> outputs.SaveSettings:
    kind = _kind(request)
    return outputs.SaveSettings(
        outdir_samples=getattr(options, f"outdir_{kind}_samples") or options.outdir_samples,
        outdir_grids=getattr(options, f"outdir_{kind}_grids") or options.outdir_grids,
        samples_format=options.samples_format, grid_format=options.grid_format,
        filename_pattern=options.samples_filename_pattern or "[seed]", save_to_dirs=options.save_to_dirs,
        directories_filename_pattern=options.directories_filename_pattern, jpeg_quality=options.jpeg_quality,
    )


__all__ = ["Engine", "save_settings"]
