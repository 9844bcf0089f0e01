"""The denoising loop shared by txt2img, img2img and inpaint.

It reads as diffusers' pipelines do (timesteps → start latents → loop → latents) but owns the
things A1111 needs and the stock pipelines don't expose: per-image generators, conditioning that
changes during sampling (prompt editing, alternation), composable diffusion (``AND`` in the
prompt: modules/processing/composable.py), latent masked-content modes, and interrupt/skip between
steps.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch

from modules.extensions.hooks import UNetStep
from modules.processing.composable import ComposableConditioning, ComposableContext, as_composable, guide
from modules.processing.conditioning import ScheduledConditioning, ScheduledPair


@dataclass
class LatentInpaint:
    """Inpainting inputs at latent resolution."""

    mask: torch.Tensor  # [B, 1, h, w], 1 = repaint
    masked_image_latents: Optional[torch.Tensor] = None  # [B, C, h, w], set for 9-channel UNets
    blend: bool = True  # 4-channel UNets: keep re-imposing the original outside the mask


@dataclass
class SamplingJob:
    unet: torch.nn.Module
    device: torch.device  # where the UNet computes (its weights may rest on the CPU under offload)
    scheduler: object
    cond: Union[ScheduledConditioning, ComposableConditioning]  # AND sub-prompts: ComposableConditioning
    uncond: ScheduledConditioning
    cfg_scale: float
    steps: int
    noise: torch.Tensor  # [B, C, h, w] initial noise, float32
    generators: list[torch.Generator]
    init_latents: Optional[torch.Tensor] = None  # scaled latents of the init images (img2img/inpaint)
    start_latents: Optional[torch.Tensor] = None  # init latents after masked-content edits
    strength: float = 1.0
    # img2img steps run; None = int(steps * strength). Hires fix runs exactly its hires steps of a
    # schedule `steps` long (A1111's img2img given steps), which int(steps * strength) misses.
    run_steps: Optional[int] = None
    inpaint: Optional[LatentInpaint] = None
    time_ids: Optional[torch.Tensor] = None  # SDXL micro-conditioning, [2, n] (uncond, cond)
    step_options: dict[str, float] = field(default_factory=dict)  # eta, s_churn, ... (samplers.step_options)
    # False: one UNet call per step for the whole batch (uncond + cond), the fast default.
    # True: one call per image (its uncond+cond pair); batched kernels round differently from lone
    # ones, and this keeps image i of a batch pixel-identical to a lone job with its seed.
    unet_per_image: bool = False
    # Extensions' per-step UNet inputs (ControlNet residuals): called before every UNet call with
    # the call's inputs, returns extra UNet keyword arguments (rows match `sample`).
    unet_step: Optional[Callable[[UNetStep], dict]] = None
    pass_index: int = 0  # 1 in hires fix's second pass (UNetStep.pass_index)


@dataclass(frozen=True)
class SamplingOutcome:
    latents: torch.Tensor
    steps_done: int
    total_steps: int
    stopped_early: bool


StepCallback = Callable[[int, int, Callable[[], torch.Tensor]], None]  # (step, total, preview latents)
StopCheck = Callable[[], bool]


def _timesteps(job: SamplingJob, device: torch.device) -> tuple[torch.Tensor, int]:
    """The timesteps to run and the number of prompt-schedule steps they span."""
    sched = job.scheduler
    sched.set_timesteps(job.steps, device=device)
    if job.init_latents is None or job.strength >= 1.0:
        return sched.timesteps, job.steps
    run = job.run_steps if job.run_steps is not None else int(job.steps * job.strength)
    run = max(1, min(job.steps, run))
    start = (job.steps - run) * sched.order
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start)
    return sched.timesteps[start:], run


def _step_kwargs(scheduler, generators: list[torch.Generator], options: dict[str, float]) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kwargs = {k: v for k, v in options.items() if k in params}
    if "generator" in params:
        kwargs["generator"] = generators
    return kwargs


def _rows(value, idx: torch.Tensor):
    """Rows `idx` of a UNet keyword argument: a tensor, or a list/tuple/dict of tensors."""
    if isinstance(value, torch.Tensor):
        return value[idx]
    if isinstance(value, (list, tuple)):
        return type(value)(_rows(v, idx) for v in value)
    if isinstance(value, dict):
        return {k: _rows(v, idx) for k, v in value.items()}
    return value


def _predict(unet, model_in: torch.Tensor, t, embeds: torch.Tensor, added: Optional[dict],
             groups: int, extra: Optional[dict] = None) -> torch.Tensor:
    """UNet noise prediction, optionally in `groups` calls of one image each (rows i, B+i, 2B+i, ...:
    its uncond and every sub-prompt's cond row)."""
    extra = extra or {}
    if groups == 1:
        return unet(model_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False,
                    **extra)[0]
    rows = model_in.shape[0]
    parts = []
    for i in range(groups):
        idx = torch.arange(i, rows, groups, device=model_in.device)
        sub_added = _rows(added, idx) if added else None
        parts.append(unet(model_in[idx], t, encoder_hidden_states=embeds[idx], added_cond_kwargs=sub_added,
                          return_dict=False, **_rows(extra, idx))[0])
    out = parts[0].new_empty((rows, *parts[0].shape[1:]))
    for i, part in enumerate(parts):
        out[i::groups] = part
    return out


def denoise(job: SamplingJob, on_step: StepCallback, should_stop: StopCheck) -> SamplingOutcome:
    unet, sched = job.unet, job.scheduler
    device, dtype = job.device, unet.dtype
    timesteps, schedule_steps = _timesteps(job, device)
    noise = job.noise.to(device)
    batch = noise.shape[0]

    # 1. start latents: pure noise, or the init image noised to the first timestep
    if job.init_latents is None or job.strength >= 1.0:
        latents = noise * sched.init_noise_sigma
    else:
        start = job.start_latents if job.start_latents is not None else job.init_latents
        latents = sched.add_noise(start.float(), noise, timesteps[:1].repeat(batch))
    latents = latents.to(dtype)

    # Rows of each UNet call: [uncond × batch if use_cfg, cond × batch] or, with AND sub-prompts,
    # [uncond × batch if needed, sub-prompt 1 × batch, sub-prompt 2 × batch, ...].
    composed = as_composable(job.cond)
    plain = composed.is_plain  # no AND (or it came down to one sub-prompt at weight 1): plain CFG
    # plain: at 1 the guided result equals the conditional one; AND: see ComposableConditioning
    use_cfg = job.cfg_scale != 1.0 if plain else composed.needs_uncond(job.cfg_scale)
    blocks = (1 if plain else composed.count) + (1 if use_cfg else 0)
    step_kwargs = _step_kwargs(sched, job.generators, job.step_options)
    inpaint = job.inpaint
    blend_mask = None
    if inpaint is not None and inpaint.blend and job.init_latents is not None:
        blend_mask = inpaint.mask.to(device, dtype)  # once, not every step
    extra_channels = None
    if inpaint is not None and inpaint.masked_image_latents is not None:
        extra_channels = torch.cat([inpaint.mask, inpaint.masked_image_latents], dim=1).to(device, dtype)
        if blocks > 1:
            extra_channels = torch.cat([extra_channels] * blocks)
    row_time_ids = None
    if job.time_ids is not None:
        if plain:
            ids = job.time_ids if use_cfg else job.time_ids[1:]
            row_time_ids = ids.repeat_interleave(batch, dim=0).to(device, dtype)
        else:
            parts = ([job.time_ids[:1].expand(batch, -1)] if use_cfg else []) + [
                job.time_ids[1:].expand(batch * composed.count, -1)]
            row_time_ids = torch.cat(parts).to(device, dtype)

    if plain:  # reuses the padded uncond+cond tensor while unchanged
        cond = composed.groups[0]
        prompts = ScheduledPair(cond, job.uncond)
    else:
        composed_context = ComposableContext(composed, job.uncond if use_cfg else None)
        weights = composed.weight_tensor(job.cfg_scale, device)
    total = len(timesteps)
    last_x0: Optional[torch.Tensor] = None
    done = 0
    order = getattr(sched, "order", 1)
    for i, t in enumerate(timesteps):
        if should_stop():
            break
        # 2. conditioning for this step (prompt editing / alternation switch it)
        schedule_step = min(schedule_steps - 1, i // order)
        if plain:
            context = prompts.cfg_context(schedule_step) if use_cfg else cond.at(schedule_step)
        else:
            context = composed_context.at(schedule_step)
        model_in = torch.cat([latents] * blocks) if blocks > 1 else latents
        model_in = sched.scale_model_input(model_in, t)
        if extra_channels is not None:
            model_in = torch.cat([model_in, extra_channels], dim=1)
        added = None
        if context.pooled is not None and row_time_ids is not None:
            added = {"text_embeds": context.pooled.to(device, dtype), "time_ids": row_time_ids}

        # 3. extensions' extra UNet inputs, then predict the noise and guide it
        embeds = context.embeds.to(device, dtype)
        extra = None
        if job.unet_step is not None:
            extra = job.unet_step(UNetStep(index=i, total=total, timestep=t, sample=model_in,
                                           encoder_hidden_states=embeds, cfg=use_cfg, added_cond_kwargs=added,
                                           pass_index=job.pass_index, uncond_rows=batch if use_cfg else 0))
            if extra and "added_cond_kwargs" in extra:  # extensions' extra UNet inputs join the UNet's own
                extra = dict(extra)
                added = {**(added or {}), **extra.pop("added_cond_kwargs")}
        pred = _predict(unet, model_in, t, embeds, added, groups=batch if job.unet_per_image and batch > 1 else 1,
                        extra=extra)
        if not plain:
            pred = guide(pred, batch, weights, has_uncond=use_cfg)
        elif use_cfg:
            pred_uncond, pred_cond = pred.chunk(2)
            pred = pred_uncond + job.cfg_scale * (pred_cond - pred_uncond)

        # 4. step, then (4-channel inpaint) put the known region back at the next noise level
        out = sched.step(pred, t, latents, **step_kwargs, return_dict=True)
        latents = out.prev_sample.to(dtype)
        last_x0 = getattr(out, "pred_original_sample", None)
        if blend_mask is not None:
            known = job.init_latents
            if i < total - 1:
                # one timestep, broadcast over the batch: schedulers without a begin index look
                # each timestep up with a host-device sync (.item()), so one lookup, not B
                known = sched.add_noise(known.float(), noise, timesteps[i + 1:i + 2])
            latents = (1 - blend_mask) * known.to(dtype) + blend_mask * latents
        done = i + 1
        preview_source = last_x0 if last_x0 is not None else latents
        on_step(done, total, lambda src=preview_source: src)

    return SamplingOutcome(latents=latents, steps_done=done, total_steps=total, stopped_early=done < total)
