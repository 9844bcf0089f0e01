"""`Engine.generate`: the one function every front end ends in.

A job is one `JobState` run through named phases; extensions attach between them (see
modules/extensions/hooks.py for what each hook may do):

    prepare            sampler, model, size, seeds, prompts
    process            hooks: may edit prompts, seeds, the request
    patch model        hooks: patches for this job, always undone; tiling: circular-padding copies
                       of the UNet and VAE for this job (modules/processing/tiling.py)
    for each batch:
      before batch     hooks: may edit the batch's prompts
      prompts          extra-network tags (<lora:...>) parsed out, once
      process batch    hooks: see the tags; per-batch patches, always undone
      conditioning     text encoder
      sample           denoising loop; unet_step hooks add UNet inputs every step
      decode           VAE, inpaint compositing; after_batch hooks
      postprocess      per image: face restore, NSFW, postprocess_image hooks, watermark
                       (modules/postprocess/image_finish.py)
      save             outputs + infotext
    grid, postprocess hooks

Each phase is a small method reading and writing the job state; the work itself lives in the
modules imported below.
"""

from __future__ import annotations

import logging
import time
import weakref
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional

import torch
from PIL import Image

from modules import infotext as infotext_mod
from modules import outputs
from modules.extensions.hooks import OutputImage, UNetStep
from modules.extensions.runner import ExtensionSet, JobHooks
from modules.generation.request import GenerationRequest, MaskedContent, Mode
from modules.generation.result import GenerationResult, ImageParams, Timings
from modules.jobs.control import JobControl
from modules.models.loaded import LoadedModel, ModelProvider
from modules.models.vae_decode import decode_latents, unscale_latents
from modules.paths import Paths
from modules.postprocess import image_finish
from modules.postprocess.services import Postprocessors
from modules.processing import extra_networks, hires as hires_mod, image_ops, latents as latent_ops, samplers, tiling
from modules.processing.compiled import Compiler
from modules.processing.composable import ComposableConditioning
from modules.processing.conditioning import PromptEncoder, ScheduledConditioning
from modules.processing.job_state import BatchState, JobState
from modules.processing.latent_upscale import is_latent_mode, upscale_latents
from modules.processing.noise import NoiseSpec, create_noise, resolve_seeds
from modules.processing.sampling import LatentInpaint, SamplingJob, SamplingOutcome, denoise
from modules.processing.vae_modes import vae_memory_modes
from modules.settings import Options, SettingsStore

if TYPE_CHECKING:
    from modules.extensions.selectable import ScriptServices, ScriptSet

log = logging.getLogger(__name__)


@dataclass
class _BatchInputs:
    """What one batch needs besides the seeds: init latents and inpaint state."""

    init_latents: Optional[torch.Tensor] = None
    inpaint: Optional[LatentInpaint] = None
    prepared: list[image_ops.PreparedInpaint] = field(default_factory=list)
    passthrough: list[Image.Image] = field(default_factory=list)  # img2img at strength 0
    warnings: list[str] = field(default_factory=list)  # e.g. a mask resized to its image


@dataclass(frozen=True)
class SavedImage:
    """Told to the `on_image_saved` observer after each file is written (A1111's on_image_saved)."""

    job: JobState
    image: OutputImage
    path: str
    infotext: str


class Engine:
    def __init__(self, models: ModelProvider, settings: SettingsStore, paths: Paths,
                 vae_tile_threshold: Optional[int] = None, extensions: Optional[ExtensionSet] = None,
                 on_image_saved: Optional[Callable[[SavedImage], None]] = None,
                 postprocess: Optional[Postprocessors] = None, scripts: Optional["ScriptSet"] = None,
                 compiler: Optional[Compiler] = None) -> None:
        self._models = models
        self._compiler = compiler if compiler is not None else Compiler()  # --compile; off: eager modules
        self._scripts = scripts  # selectable scripts (X/Y/Z plot...): run when request.script is set
        # upscalers (hires fix), face restoration, NSFW checker: the app's one set of them
        self._postprocess = postprocess if postprocess is not None else Postprocessors(paths, settings)
        self._vae_tile_threshold = vae_tile_threshold  # None: decode_latents' default
        self._settings = settings
        self._paths = paths
        self._extensions = extensions if extensions is not None else ExtensionSet()
        self._on_image_saved = on_image_saved
        self._encoders: "weakref.WeakKeyDictionary[object, PromptEncoder]" = weakref.WeakKeyDictionary()

    @property
    def extensions(self) -> ExtensionSet:
        return self._extensions

    @property
    def postprocess(self) -> Postprocessors:
        return self._postprocess

    @property
    def compiler(self) -> Compiler:
        return self._compiler

    # ------------------------------------------------------------------ entry point
    def generate(self, request: GenerationRequest, control: Optional[JobControl] = None) -> GenerationResult:
        control = control or JobControl()
        if request.script is not None:  # a selectable script: it runs sub-jobs through this method
            return self._run_script(request, control)
        job = JobState(request=request, options=self._settings.get(), control=control, result=GenerationResult())
        started = time.perf_counter()
        # unknown names / bad args fail here, before the model loads
        hooks = self._extensions.for_request(request.extensions, is_img2img=request.mode is not Mode.TXT2IMG)
        self._prepare(job)
        with torch.inference_mode():
            with ExitStack() as job_patches:
                hooks.process(job)
                self._resolve(job)  # a hook may have changed the request
                hooks.patch_models(job, job_patches)
                image_finish.prepare(job, self._postprocess)  # restorer / NSFW checker missing: fail now
                if job.request.tiling:  # this job's circular-padding copies of the UNet and VAE
                    job.model = tiling.tiled(job.model)
                control.start(job.batch_count, job.request.steps + (job.hires.run_steps if job.hires else 0))
                for batch in self._batches(job):
                    if control.interrupted:
                        break
                    self._run_batch(job, batch, hooks)
                    control.take_skip()
            job.result.interrupted = control.interrupted
            t = time.perf_counter()
            self._save_grid(job)
            job.clock.add("save", t)
            hooks.postprocess(job, job.result)
        self._finish(job, started)
        return job.result

    def _run_script(self, request: GenerationRequest, control: JobControl) -> GenerationResult:
        from modules.extensions.selectable import ScriptSet, run_script

        return run_script(self._scripts or ScriptSet(), request, control, self.generate, self.script_services())

    def script_services(self) -> "ScriptServices":
        from modules.extensions.selectable import ScriptServices
        from modules.styles import StyleDatabase

        return ScriptServices(registry=self._models, postprocess=self._postprocess, settings=self._settings,
                              paths=self._paths, styles=StyleDatabase(self._paths.styles_file))

    # ------------------------------------------------------------------ prepare
    def _prepare(self, job: JobState) -> None:
        request = job.request
        seeds = resolve_seeds(request)
        job.all_seeds, job.all_subseeds = list(seeds.seeds), list(seeds.subseeds)
        job.all_prompts = [request.prompt] * request.n_images
        job.all_negative_prompts = [request.negative_prompt] * request.n_images
        self._resolve(job)

    def _resolve(self, job: JobState) -> None:
        """Sampler, model and size from the request: at the start, and again after `process` hooks."""
        t = time.perf_counter()
        request = job.request
        job.sampler = samplers.resolve(request.sampler_name, request.scheduler)  # fail fast on bad names
        self._check_hires_upscaler(request)
        job.model = self._models.get(request.checkpoint, request.vae)
        job.clock.add("load", t)
        job.width = request.width or job.model.native_size
        job.height = request.height or job.model.native_size
        result = job.result
        result.width, result.height, result.model_title = job.width, job.height, job.model.title
        result.sampler_name, result.scheduler = job.sampler.sampler.name, job.sampler.schedule.name
        result.request = request
        self._plan_hires(job)
        notes = [f"{job.sampler.sampler.name}: {job.sampler.sampler.note}"] if job.sampler.sampler.note else []
        _add_warnings(result, notes + list(_step_options(job).warnings))

    def _batches(self, job: JobState) -> Iterator[BatchState]:
        size = job.batch_size
        for index in range(job.batch_count):
            lo, hi = index * size, (index + 1) * size
            yield BatchState(index=index, first_image=lo, seeds=job.all_seeds[lo:hi],
                             subseeds=job.all_subseeds[lo:hi], prompts=job.all_prompts[lo:hi],
                             negative_prompts=job.all_negative_prompts[lo:hi])

    # ------------------------------------------------------------------ one batch
    def _run_batch(self, job: JobState, batch: BatchState, hooks: JobHooks) -> None:
        hooks.before_batch(job, batch)
        self._parse_prompts(job, batch)
        with ExitStack() as batch_patches:
            hooks.process_batch(job, batch, batch_patches)
            t = time.perf_counter()
            self._condition(job, batch)
            inputs = self._prepare_inputs(job, batch)
            _add_warnings(job.result, inputs.warnings)
            if inputs.passthrough:
                job.clock.add("encode", t)
                batch.images = inputs.passthrough
            else:
                job.clock.add("encode", t)
                first_pass = self._sample(job, batch, inputs, hooks)
                if job.hires is None or not self._hires_pass(job, batch, inputs, first_pass, hooks):
                    self._decode(job, batch, inputs)
        hooks.after_batch(job, batch)
        self._postprocess_and_save(job, batch, hooks)

    def _parse_prompts(self, job: JobState, batch: BatchState) -> None:
        """Take extra-network tags out of the prompts: the encoder sees the rest, infotext keeps them."""
        batch.encoder_prompts, positive = extra_networks.parse_prompts(batch.prompts)
        batch.encoder_negative_prompts, negative = extra_networks.parse_prompts(batch.negative_prompts)
        batch.extra_networks = positive + negative
        known = self._extensions.extra_network_kinds
        unknown = sorted({c.kind for c in batch.extra_networks if c.kind not in known})
        _add_warnings(job.result, [f"unknown extra network <{kind}:...> ignored: no extension handles it"
                                   for kind in unknown])

    def _condition(self, job: JobState, batch: BatchState) -> None:
        encoder = self._encoder(job.model)
        steps, clip_skip = job.request.steps, job.request.clip_skip
        state = (*job.text_encoder_state, *batch.text_encoder_state)
        # the positive prompts split on AND (composable diffusion); the negative ones are not
        batch.cond = ComposableConditioning.from_prompts(encoder, batch.encoder_prompts, steps, clip_skip, state=state,
                                                         embeddings=job.embeddings)
        batch.uncond = ScheduledConditioning(encoder, batch.encoder_negative_prompts, steps, clip_skip, state=state,
                                             embeddings=job.embeddings)

    def _sample(self, job: JobState, batch: BatchState, inputs: _BatchInputs, hooks: JobHooks) -> SamplingOutcome:
        t = time.perf_counter()
        request, model = job.request, job.model
        device = model.device  # once: the pipeline's execution device walks every module
        factor = model.vae_scale_factor
        latent_shape = (model.latent_channels, job.height // factor, job.width // factor)
        resize_from = None
        if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0:
            resize_from = (request.seed_resize_from_h // factor, request.seed_resize_from_w // factor)
        spec = NoiseSpec(shape=latent_shape, subseed_strength=request.subseed_strength, resize_from=resize_from,
                         source=request.rng_source)
        noise, generators = create_noise(spec, batch.seeds, batch.subseeds, device)
        scheduler = samplers.build_scheduler(job.sampler, model.pipe.scheduler.config, seeds=batch.seeds,
                                             is_sdxl=model.family.is_xl)
        unet_step = _unet_step_hook(job, batch, hooks)
        sampling = SamplingJob(
            unet=self._unet(job), device=device, scheduler=scheduler, cond=batch.cond, uncond=batch.uncond,
            cfg_scale=request.cfg_scale, steps=request.steps, noise=noise, generators=generators,
            init_latents=inputs.init_latents, start_latents=_masked_content_start(request, inputs, noise),
            strength=1.0 if request.mode is Mode.TXT2IMG else request.denoising_strength,
            inpaint=inputs.inpaint, time_ids=_time_ids(model, job.width, job.height),
            unet_per_image=job.options.batch_per_image, step_options=_step_options(job).kwargs,
            unet_step=unet_step)
        t = job.clock.add("encode", t)
        # progress counts both passes: the first pass's steps, then the planned hires steps
        outcome = self._denoise(job, batch, sampling, offset=0, after=job.hires.run_steps if job.hires else 0)
        batch.latents = outcome.latents
        job.clock.add("sample", t)
        return outcome

    def _denoise(self, job: JobState, batch: BatchState, sampling: SamplingJob, offset: int, after: int,
                 what_pass: str = "") -> SamplingOutcome:
        """Run one denoising loop, reporting its steps as steps offset+1.. of offset+total+after."""
        model, control, options = job.model, job.control, job.options

        def preview(latents) -> Image.Image:  # the job's `show_progress_type` (read once, with its options)
            return latent_ops.latent_preview(model.vae, latents, model.family.is_xl, options.show_progress_type,
                                             tiling=options.vae_tiling, tile_threshold=self._vae_tile_threshold)

        def on_step(step: int, total: int, preview_latents) -> None:
            control.report_step(batch.index, offset + step, offset + total + after,
                                lambda: preview(preview_latents()))

        outcome = denoise(sampling, on_step, lambda: control.interrupted or control.skip_requested)
        if outcome.stopped_early:
            what = "interrupted" if control.interrupted else "skipped"
            job.result.warnings.append(
                f"batch {batch.index + 1} {what} at step {outcome.steps_done}/{outcome.total_steps}{what_pass}")
        return outcome

    # ------------------------------------------------------------------ hires fix (txt2img second pass)
    def _check_hires_upscaler(self, request: GenerationRequest) -> None:
        """An unknown hires upscaler fails before the model loads (latent modes are not upscalers)."""
        if request.hires is not None and not is_latent_mode(request.hires.upscaler):
            self._postprocess.upscalers.require(request.hires.upscaler, "hires.upscaler")

    def _plan_hires(self, job: JobState) -> None:
        for key in [k for k in job.extra_params if k.startswith("Hires ")]:  # from before a hook's change
            del job.extra_params[key]
        job.hires = hires_mod.plan(job.request, job.width, job.height, job.sampler)
        if job.hires is not None:
            job.extra_params.update(job.hires.infotext(job.request, job.sampler))

    def _hires_pass(self, job: JobState, batch: BatchState, inputs: _BatchInputs, first: SamplingOutcome,
                    hooks: JobHooks) -> bool:
        """Upscale the first pass and denoise it again at the target size. Leaves latents for
        `_decode`, or returns True when it set `batch.images` itself (an image upscaler at
        denoising strength 0: the upscaled picture is the result, no VAE round trip)."""
        plan, model, control, request = job.hires, job.model, job.control, job.request
        if first.stopped_early or control.interrupted or control.skip_requested:
            # as A1111: an interrupted job keeps the first pass as it is
            _add_warnings(job.result, [f"hires fix not run for batch {batch.index + 1}: the first pass was stopped;"
                                       f" its images are {job.width}x{job.height}"])
            return False
        t = time.perf_counter()
        target, factor = plan.target, model.vae_scale_factor
        images = None
        if plan.is_latent:  # the first pass's latents straight into the upscale: no decode, no encode
            latents = upscale_latents(batch.latents.float(), *target.latent_size, plan.options.upscaler)
        else:
            self._decode(job, batch, inputs)
            t = time.perf_counter()
            upscalers = self._postprocess.upscalers
            images = [upscalers.upscale_to(img, target.upscale_width, target.upscale_height, plan.options.upscaler)
                      for img in batch.images]
            if plan.run_steps == 0:
                batch.images = [img.crop(target.crop_box()) for img in images]
                job.clock.add("upscale", t)
                return True
            latents = latent_ops.encode_images(model.vae, latent_ops.pil_to_tensor(images))
        latents = hires_mod.crop_latents(latents, target)
        batch.latents = latents
        t = job.clock.add("upscale", t)
        if plan.run_steps == 0:  # denoising strength 0: the upscaled latents are the result
            return False

        height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
        resize_from = None
        if request.seed_resize_from_w > 0 and request.seed_resize_from_h > 0:
            resize_from = (request.seed_resize_from_h // factor, request.seed_resize_from_w // factor)
        # A1111 draws new noise at the new size from the same seeds
        spec = NoiseSpec(shape=tuple(latents.shape[1:]), subseed_strength=request.subseed_strength,
                         resize_from=resize_from, source=request.rng_source)
        noise, generators = create_noise(spec, batch.seeds, batch.subseeds, model.device)
        cond, uncond = self._hires_conditioning(job, batch)
        inpaint = None
        if model.is_inpainting:  # 9-channel UNets: everything masked, as the first pass
            n = batch.size
            pictures = ([img.crop(target.crop_box()) for img in images] if images is not None
                        else [Image.new("RGB", (width, height), (127, 127, 127))] * n)
            inpaint = _latent_inpaint(model, pictures, [Image.new("L", (width, height), 255)] * n, blend=False,
                                      mask_weight=job.options.inpainting_mask_weight if images is not None else 1.0)
        sampling = SamplingJob(
            unet=self._unet(job), device=model.device,
            scheduler=samplers.build_scheduler(plan.sampler, model.pipe.scheduler.config, seeds=batch.seeds,
                                               is_sdxl=model.family.is_xl),
            cond=cond, uncond=uncond, cfg_scale=plan.cfg_scale, steps=plan.steps, run_steps=plan.run_steps,
            noise=noise, generators=generators, init_latents=latents.to(model.device), strength=plan.strength,
            inpaint=inpaint, time_ids=_time_ids(model, width, height), unet_per_image=job.options.batch_per_image,
            step_options=_step_options(job, plan.sampler).kwargs, unet_step=_unet_step_hook(job, batch, hooks),
            pass_index=1)
        outcome = self._denoise(job, batch, sampling, offset=first.total_steps, after=0, what_pass=" of the hires pass")
        batch.latents = outcome.latents
        job.clock.add("sample", t)
        return False

    def _hires_conditioning(self, job: JobState,
                            batch: BatchState) -> tuple[ComposableConditioning, ScheduledConditioning]:
        """The second pass's prompts ("" = the first pass's), scheduled over the hires steps
        (A1111's prompt editing: integers count on from the first pass). The first pass's extra
        networks stay applied: tags in a hires prompt are taken out of the text, not re-applied."""
        plan, request = job.hires, job.request
        encoder = self._encoder(job.model)
        state = (*job.text_encoder_state, *batch.text_encoder_state)
        known = {(c.kind, c.items) for c in batch.extra_networks}
        pair = []
        for hr_text, first_texts in ((plan.prompt, batch.encoder_prompts),
                                     (plan.negative_prompt, batch.encoder_negative_prompts)):
            texts = first_texts
            if hr_text:
                texts, calls = extra_networks.parse_prompts([hr_text] * batch.size)
                if any((c.kind, c.items) not in known for c in calls):
                    _add_warnings(job.result, ["extra networks in the hires prompt are not applied to the "
                                               "second pass; it uses the first pass's"])
            pair.append(texts)
        options = dict(hires_steps=plan.run_steps, state=state, embeddings=job.embeddings)
        cond = ComposableConditioning.from_prompts(encoder, pair[0], request.steps, request.clip_skip, **options)
        return cond, ScheduledConditioning(encoder, pair[1], request.steps, request.clip_skip, **options)

    def _decode(self, job: JobState, batch: BatchState, inputs: _BatchInputs) -> None:
        """The whole batch in one VAE pass, or (the `batch_per_image` setting) one image at a time:
        a batched pass rounds differently from a lone one, so only then does image i equal the lone
        job with its seed; it also caps the decode's peak memory."""
        t = time.perf_counter()
        model, images, options = job.model, [], job.options
        vae, notes = model.vae, job.result.warnings
        scaled = unscale_latents(vae, batch.latents)
        with vae_memory_modes(vae, tiling=options.vae_tiling, slicing=options.vae_slicing):
            for part in (scaled.split(1) if options.batch_per_image else (scaled,)):
                decode = lambda p=part: decode_latents(vae, p, self._vae_tile_threshold)  # noqa: E731
                outcome = self._compiler.decode(vae, part, decode, notes, skip=_compile_skip(job))
                _add_warnings(job.result, [outcome.warning] if outcome.warning else [])
                images.extend(latent_ops.tensor_to_pil(outcome.images))
        if inputs.prepared:
            images = [image_ops.composite_inpaint(img, prep) for img, prep in zip(images, inputs.prepared)]
        batch.images = images
        job.clock.add("decode", t)

    # ------------------------------------------------------------------ inputs (img2img / inpaint)
    def _prepare_inputs(self, job: JobState, batch: BatchState) -> _BatchInputs:
        request, model = job.request, job.model
        width, height, n = job.width, job.height, batch.size
        mask_weight = job.options.inpainting_mask_weight
        if request.mode is Mode.TXT2IMG:
            if not model.is_inpainting:
                return _BatchInputs()
            # 9-channel models sample txt2img with everything masked, as A1111 does.
            blank = [Image.new("RGB", (width, height), (127, 127, 127))] * n
            full = [Image.new("L", (width, height), 255)] * n
            return _BatchInputs(inpaint=_latent_inpaint(model, blank, full, blend=False))

        # image k of the whole job starts from init_images[k % len(init_images)]
        sources = [request.init_images[(batch.first_image + j) % len(request.init_images)] for j in range(n)]
        if request.mode is Mode.IMG2IMG:
            resized = [image_ops.resize_image(img.convert("RGB"), width, height, request.resize_mode)
                       for img in sources]
            if request.denoising_strength == 0.0:
                return _BatchInputs(passthrough=resized)
            init = latent_ops.encode_images(model.vae, latent_ops.pil_to_tensor(resized))
            inpaint = None
            if model.is_inpainting:
                full = [Image.new("L", (width, height), 255)] * n  # A1111: img2img masks everything
                inpaint = _latent_inpaint(model, resized, full, blend=False, mask_weight=mask_weight)
            return _BatchInputs(init_latents=init, inpaint=inpaint)

        prepared = [image_ops.prepare_inpaint(img, request.inpaint, width, height, request.resize_mode)
                    for img in sources]
        work = [p.image for p in prepared]
        notes = [p.warning for p in prepared if p.warning]
        if request.denoising_strength == 0.0:
            return _BatchInputs(passthrough=[p.original for p in prepared], warnings=notes)
        init = latent_ops.encode_images(model.vae, latent_ops.pil_to_tensor(work))
        masks = [p.mask for p in prepared]
        inpaint = _latent_inpaint(model, work, masks, blend=not model.is_inpainting, mask_weight=mask_weight)
        return _BatchInputs(init_latents=init, inpaint=inpaint, prepared=prepared, warnings=notes)

    # ------------------------------------------------------------------ results
    def _postprocess_and_save(self, job: JobState, batch: BatchState, hooks: JobHooks) -> None:
        t = time.perf_counter()
        request, options, result = job.request, job.options, job.result
        step_infotext = _step_options(job).infotext
        for j, image in enumerate(batch.images):
            out = OutputImage(index=batch.first_image + j, image=image, seed=batch.seeds[j],
                              subseed=batch.subseeds[j], prompt=batch.prompts[j],
                              negative_prompt=batch.negative_prompts[j])
            image_finish.before_extensions(job, out, self._postprocess)  # face restore, NSFW
            hooks.postprocess_image(job, out)
            image_finish.after_extensions(job, out)  # watermark, last before saving
            params = self._image_params(job, out, {**step_infotext, **job.extra_params, **out.extra_params})
            text = infotext_mod.build_infotext(request, params)
            result.add_image(out.image, params, text)
            if request.save_images and options.samples_save:
                path = save_sample(out.image, params, text, request, options, self._paths.outputs_dir)
                result.saved_paths.append(str(path))
                job.control.report_saved(str(path))
                if self._on_image_saved is not None:
                    self._on_image_saved(SavedImage(job, out, str(path), text))
        job.clock.add("save", t)

    @staticmethod
    def _image_params(job: JobState, out: OutputImage, extra: dict) -> ImageParams:
        model = job.model
        return ImageParams(prompt=out.prompt, negative_prompt=out.negative_prompt, seed=out.seed,
                           subseed=out.subseed, width=job.width, height=job.height,
                           sampler_name=job.sampler.sampler.name, scheduler=job.sampler.schedule.name,
                           model_name=model.name, model_hash=model.short_hash, vae_name=model.vae_name,
                           vae_hash=model.vae_hash, extra=extra)

    def _save_grid(self, job: JobState) -> None:
        request, options, result = job.request, job.options, job.result
        if len(result.images) < 2 or not (request.save_grid and options.grid_save):
            return
        result.grid = image_finish.mark(job, outputs.make_grid(result.images))
        if request.save_images:
            path = save_grid(result, request, options, self._paths.outputs_dir)
            result.grid_path = str(path)
            job.control.report_saved(str(path))

    def _finish(self, job: JobState, started: float) -> None:
        spent, result, request = job.clock.spent, job.result, job.request
        result.timings = Timings(total_s=time.perf_counter() - started, load_s=spent.get("load", 0.0),
                                 encode_s=spent.get("encode", 0.0), sample_s=spent.get("sample", 0.0),
                                 decode_s=spent.get("decode", 0.0), save_s=spent.get("save", 0.0))
        log.info("%s %dx%d, %d steps, %s (%s): %d image(s) in %.1f s%s", request.mode.value, job.width, job.height,
                 request.steps, result.sampler_name, result.scheduler, len(result.images),
                 result.timings.total_s, " (interrupted)" if result.interrupted else "")

    def _unet(self, job: JobState):
        """The UNet the denoising loop calls: compiled under --compile (see modules/processing/compiled.py)."""
        return self._compiler.unet(job.model.unet, job.result.warnings, skip=_compile_skip(job))

    def _encoder(self, model: LoadedModel) -> PromptEncoder:
        encoder = self._encoders.get(model.pipe)
        if encoder is None:
            encoder = PromptEncoder.from_model(model)
            self._encoders[model.pipe] = encoder
        return encoder


# ---------------------------------------------------------------------------------------------
# pure helpers of the phases


def _add_warnings(result: GenerationResult, warnings: Iterable[str]) -> None:
    for warning in warnings:
        if warning not in result.warnings:
            result.warnings.append(warning)


def _compile_skip(job: JobState) -> Optional[str]:
    # seamless tiling makes per-job copies of the UNet and VAE: compiling them would recompile every job
    return "seamless tiling uses per-job copies of the model" if job.request.tiling else None


def _unet_step_hook(job: JobState, batch: BatchState, hooks: JobHooks) -> Optional[Callable[[UNetStep], dict]]:
    """The extensions' unet_step hooks for one sampling loop (both passes of a hires job), or None."""
    if not hooks.wants_unet_steps:
        return None
    return lambda step: hooks.unet_step(job, batch, step)


def _latent_inpaint(model: LoadedModel, images: list[Image.Image], masks: list[Image.Image],
                    blend: bool, mask_weight: float = 1.0) -> LatentInpaint:
    factor = model.vae_scale_factor
    mask = latent_ops.mask_to_tensor(masks)
    latent_mask = torch.nn.functional.interpolate(mask, size=(mask.shape[-2] // factor, mask.shape[-1] // factor))
    masked_latents = None
    if model.is_inpainting:
        # A1111's inpainting_mask_weight: the masked part of the picture fades out by this much
        # (1: hidden, A1111's default; 0: the model sees the whole picture)
        pixels = latent_ops.pil_to_tensor(images) * (1.0 - mask_weight * (mask >= 0.5))
        masked_latents = latent_ops.encode_images(model.vae, pixels)
    return LatentInpaint(mask=latent_mask.to(model.device), masked_image_latents=masked_latents, blend=blend)


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


def _step_options(job: JobState, choice: Optional[samplers.SamplerChoice] = None) -> samplers.StepOptions:
    request, options = job.request, job.options
    params = samplers.SamplerParams(eta=request.eta, s_churn=request.s_churn, s_tmin=request.s_tmin,
                                    s_tmax=request.s_tmax, s_noise=request.s_noise)
    return samplers.step_options((choice or job.sampler).sampler, params, eta_ancestral=getattr(options, "eta_ancestral", 1.0),
                                 eta_ddim=getattr(options, "eta_ddim", 0.0))


def _kind(request: GenerationRequest) -> str:
    return "txt2img" if request.mode is Mode.TXT2IMG else "img2img"


def save_sample(image: Image.Image, params: ImageParams, infotext: str, request: GenerationRequest,
                options: Options, outputs_dir: Path) -> Path:
    """One generated image under outputs/, named and formatted by the settings, with its infotext."""
    return outputs.save_image(image, kind=_kind(request), seed=params.seed, prompt=params.prompt, infotext=infotext,
                              settings=save_settings(options, request), base_dir=outputs_dir, params=params,
                              request=request)


def save_grid(result: GenerationResult, request: GenerationRequest, options: Options, outputs_dir: Path) -> Path:
    """The job's grid (`result.grid`), with the first image's seed and infotext."""
    return outputs.save_image(result.grid, kind=_kind(request), seed=result.seeds[0], prompt=request.prompt,
                              infotext=result.infotexts[0], settings=save_settings(options, request),
                              base_dir=outputs_dir, is_grid=True, params=result.params[0], request=request)


def save_settings(options: Options, request: GenerationRequest) -> outputs.SaveSettings:
    kind = _kind(request)
    return outputs.SaveSettings(
        outdir_samples=getattr(options, f"outdir_{kind}_samples") or options.outdir_samples,
        outdir_grids=getattr(options, f"outdir_{kind}_grids") or options.outdir_grids,
        samples_format=options.samples_format, grid_format=options.grid_format,
        filename_pattern=options.samples_filename_pattern or "[seed]", save_to_dirs=options.save_to_dirs,
        directories_filename_pattern=options.directories_filename_pattern, jpeg_quality=options.jpeg_quality,
    )


__all__ = ["Engine", "SavedImage", "save_grid", "save_sample", "save_settings"]
