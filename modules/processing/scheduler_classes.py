"""diffusers schedulers that run on a sigma list we compute (A1111's schedule types).

Imported only when a scheduler is built (it imports torch and diffusers). Each class is a plain
subclass of the diffusers scheduler; `attach_schedule` gives one instance its sigma function and
its step options. How a class takes the list depends on what diffusers lets it take:

- SIGMAS: `set_timesteps(sigmas=...)`, public API (Euler).
- KARRAS_HOOK: the classes with `use_karras_sigmas` build their own interleaved / multistep
  tables from the list their `_convert_to_karras` returns; we return ours. The tests check
  `scheduler.sigmas` against the schedule for every such class, so a diffusers change shows.
- OWN_STEP: Euler a, whose diffusers class has neither; we set its sigmas and step it ourselves
  (k-diffusion's ancestral step, which also makes `eta` apply).
- TIMESTEPS: `set_timesteps(timesteps=...)` takes integer training steps only (DDPM, LCM): the
  sigmas are mapped to the nearest training step, duplicates dropped.
- NONE: the class keeps its own timesteps (DDIM, PLMS: A1111's timestep samplers ignore the
  schedule type too).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable, Optional

import numpy as np
import torch
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from modules.processing.schedules import ModelSigmas

SigmaFunction = Callable[[int], np.ndarray]  # steps -> sigmas, highest first, ending with the last target


class ScheduleInput(str, Enum):
    SIGMAS = "sigmas"
    KARRAS_HOOK = "karras_hook"
    OWN_STEP = "own_step"
    TIMESTEPS = "timesteps"
    NONE = "none"


def input_for(cls: type) -> ScheduleInput:
    import inspect

    if issubclass(cls, EulerAncestralDiscreteScheduler):
        return ScheduleInput.OWN_STEP
    if issubclass(cls, EulerDiscreteScheduler):
        return ScheduleInput.SIGMAS
    init = inspect.signature(cls.__init__).parameters
    if "use_karras_sigmas" in init and hasattr(cls, "_convert_to_karras"):
        return ScheduleInput.KARRAS_HOOK
    if "timesteps" in inspect.signature(cls.set_timesteps).parameters:
        return ScheduleInput.TIMESTEPS
    return ScheduleInput.NONE


class _ScheduledMixin:
    """Holds the job's sigma function; `set_timesteps(steps, device)` stays the pipeline's call."""

    sigma_function: Optional[SigmaFunction] = None
    schedule_input: ScheduleInput = ScheduleInput.NONE

    def model_sigmas(self, is_sdxl: bool = False) -> ModelSigmas:
        return ModelSigmas.from_alphas_cumprod(self.alphas_cumprod.cpu().numpy(), is_sdxl)

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device: Any = None, *args: Any,
                      **kwargs: Any) -> None:
        if self.sigma_function is None or num_inference_steps is None or args or kwargs:
            return super().set_timesteps(num_inference_steps, device, *args, **kwargs)
        sigmas = self.sigma_function(num_inference_steps)
        how = self.schedule_input
        if how is ScheduleInput.SIGMAS:
            return super().set_timesteps(sigmas=sigmas.tolist(), device=device)
        if how is ScheduleInput.KARRAS_HOOK:
            self._custom_sigmas = sigmas[:-1]
            return super().set_timesteps(len(sigmas) - 1, device=device)
        if how is ScheduleInput.OWN_STEP:
            super().set_timesteps(len(sigmas) - 1, device=device)
            t = self.model_sigmas().sigma_to_t(sigmas[:-1])
            self.sigmas = torch.from_numpy(sigmas.astype(np.float32))
            self.timesteps = torch.from_numpy(t.astype(np.float32)).to(device)
            self.num_inference_steps = len(t)
            return None
        if how is ScheduleInput.TIMESTEPS:
            t = np.round(self.model_sigmas().sigma_to_t(sigmas[:-1][sigmas[:-1] > 0])).astype(np.int64)
            t = list(dict.fromkeys(int(v) for v in t))  # keep order, drop repeats
            return super().set_timesteps(timesteps=t, device=device)
        return super().set_timesteps(num_inference_steps, device=device)

    def _convert_to_karras(self, in_sigmas, *args: Any, **kwargs: Any):
        custom = getattr(self, "_custom_sigmas", None)
        if custom is None:
            return super()._convert_to_karras(in_sigmas, *args, **kwargs)
        return np.asarray(custom, dtype=np.float64)


_SUBCLASSES: dict[type, type] = {}  # built once per diffusers class: immutable, shared by all jobs


def scheduled_class(cls: type) -> type:
    """The subclass of a diffusers scheduler class that runs on our sigma lists."""
    if cls not in _SUBCLASSES:
        base = EulerAncestralEta if issubclass(cls, EulerAncestralDiscreteScheduler) else cls
        _SUBCLASSES[cls] = type(f"Scheduled{cls.__name__}", (_ScheduledMixin, base), {"schedule_input": input_for(cls)})
    return _SUBCLASSES[cls]


def attach_schedule(scheduler: Any, sigma_function: Optional[SigmaFunction]) -> None:
    scheduler.sigma_function = sigma_function


def denoised_from(prediction_type: str, model_output: torch.Tensor, sample: torch.Tensor,
                  sigma: torch.Tensor) -> torch.Tensor:
    """The model's clean-image estimate at noise level sigma (k-diffusion's `denoised`)."""
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
    raise ValueError(f"prediction_type {prediction_type!r} is not supported by Euler a")


def ancestral_sigmas(sigma_from: float, sigma_to: float, eta: float) -> tuple[float, float]:
    """k-diffusion's get_ancestral_step: (sigma_down, sigma_up); eta 0 is plain Euler."""
    if not eta or sigma_to == 0:
        return sigma_to, 0.0
    up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - up**2) ** 0.5, up


class EulerAncestralEta(EulerAncestralDiscreteScheduler):
    """Euler a with A1111's `eta` (noise share of each step) and `s_noise`; eta 1 is diffusers' step."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
             generator: Any = None, eta: float = 1.0, s_noise: float = 1.0, return_dict: bool = True) -> Any:
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma_from = float(self.sigmas[self.step_index])
        sigma_to = float(self.sigmas[self.step_index + 1])
        sample = sample.to(torch.float32)
        denoised = denoised_from(self.config.prediction_type, model_output, sample, self.sigmas[self.step_index])
        sigma_down, sigma_up = ancestral_sigmas(sigma_from, sigma_to, eta)
        prev = sample + (sample - denoised) / sigma_from * (sigma_down - sigma_from)
        # drawn on every step, as diffusers does, so eta 1 reproduces its images exactly
        noise = randn_tensor(model_output.shape, dtype=model_output.dtype, device=model_output.device,
                             generator=generator)
        prev = (prev + noise * sigma_up * s_noise).to(model_output.dtype)
        self._step_index += 1
        if not return_dict:
            return prev, denoised
        return EulerAncestralDiscreteSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)
