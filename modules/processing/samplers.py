"""A1111 sampler and schedule-type names as data, mapped onto diffusers schedulers.

Torch-free at import: the UI and API list names from here; diffusers is imported only when a
scheduler is built. Every job builds a fresh scheduler with `from_config`, so no job sees
another's scheduler state.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class SamplerSpec:
    name: str  # A1111's label
    scheduler_class: str  # diffusers class name
    kwargs: dict[str, Any] = field(default_factory=dict)
    default_schedule: str = "Uniform"  # what "Automatic" means for this sampler, as in A1111
    aliases: tuple[str, ...] = ()
    note: str = ""  # where the diffusers scheduler only approximates A1111's sampler


@dataclass(frozen=True)
class ScheduleSpec:
    name: str  # A1111's label
    api_name: str  # A1111's /sdapi/v1/schedulers name
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Applied only where the scheduler accepts them: "Uniform" is every scheduler's own default.
    optional_kwargs: dict[str, Any] = field(default_factory=dict)


SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                "Karras", ("k_dpmpp_2m",)),
    SamplerSpec("DPM++ SDE", "DPMSolverSDEScheduler", {}, "Karras", ("k_dpmpp_sde",)),
    SamplerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                "Exponential", ("k_dpmpp_2m_sde",)),
    SamplerSpec("DPM++ 2S a", "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                "Karras", ("k_dpmpp_2s_a",),
                note="diffusers has no ancestral single-step DPM++; its 2nd-order single-step solver is used"),
    SamplerSpec("DPM++ 3M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                "Exponential", ("k_dpmpp_3m_sde",),
                note="diffusers' 3rd-order SDE DPM-Solver++ multistep, the closest match to k-diffusion's 3M SDE"),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", {}, "Uniform", ("k_euler_a", "k_euler_ancestral")),
    SamplerSpec("Euler", "EulerDiscreteScheduler", {}, "Uniform", ("k_euler",)),
    SamplerSpec("LMS", "LMSDiscreteScheduler", {}, "Uniform", ("k_lms",)),
    SamplerSpec("Heun", "HeunDiscreteScheduler", {}, "Uniform", ("k_heun",)),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", {}, "Karras", ("k_dpm_2",)),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, "Karras", ("k_dpm_2_a",)),
    SamplerSpec("DDIM", "DDIMScheduler", {}, "Uniform", ("ddim",)),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, "Uniform", ("plms", "pndm")),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", {}, "Uniform", ("unipc",)),
    SamplerSpec("LCM", "LCMScheduler", {}, "Uniform", ("lcm",)),
    SamplerSpec("DDPM", "DDPMScheduler", {}, "Uniform", ("ddpm",)),
)

AUTOMATIC = "Automatic"
SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec(AUTOMATIC, "automatic"),
    ScheduleSpec("Uniform", "uniform", optional_kwargs={"timestep_spacing": "linspace"}),
    ScheduleSpec("Karras", "karras", {"use_karras_sigmas": True}),
    ScheduleSpec("Exponential", "exponential", {"use_exponential_sigmas": True}),
    ScheduleSpec("SGM Uniform", "sgm_uniform", {"timestep_spacing": "trailing"}),
    ScheduleSpec("Beta", "beta", {"use_beta_sigmas": True}),
)

SAMPLER_NAMES = tuple(s.name for s in SAMPLERS)
SCHEDULE_NAMES = tuple(s.name for s in SCHEDULES)


class UnknownSamplerError(ValueError):
    """An unknown sampler or schedule name; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: tuple[str, ...]) -> None:
        self.kind, self.name, self.valid = kind, name, valid
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")


@dataclass(frozen=True)
class SamplerChoice:
    sampler: SamplerSpec
    schedule: ScheduleSpec  # never Automatic: resolved to the sampler's default

    @property
    def label(self) -> str:
        return f"{self.sampler.name} / {self.schedule.name}"


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


_SAMPLER_LOOKUP = {_key(a): s for s in SAMPLERS for a in (s.name, *s.aliases)}
_SCHEDULE_LOOKUP = {_key(a): s for s in SCHEDULES for a in (s.name, s.api_name)}


def find_schedule(name: str) -> ScheduleSpec:
    spec = _SCHEDULE_LOOKUP.get(_key(name or AUTOMATIC))
    if spec is None:
        raise UnknownSamplerError("schedule type", name, SCHEDULE_NAMES)
    return spec


def split_sampler_name(name: str) -> tuple[SamplerSpec, Optional[ScheduleSpec]]:
    """'DPM++ 2M Karras' -> (DPM++ 2M, Karras); 'k_euler_a' -> (Euler a, None)."""
    key = _key(name)
    if key in _SAMPLER_LOOKUP:
        return _SAMPLER_LOOKUP[key], None
    for schedule in SCHEDULES[1:]:
        suffix = " " + _key(schedule.name)
        if key.endswith(suffix) and key[: -len(suffix)] in _SAMPLER_LOOKUP:
            return _SAMPLER_LOOKUP[key[: -len(suffix)]], schedule
    raise UnknownSamplerError("sampler", name, SAMPLER_NAMES)


def resolve(sampler_name: str, schedule_name: Optional[str] = AUTOMATIC) -> SamplerChoice:
    """Resolve A1111 names (old combined aliases included) to one sampler and one schedule.

    An explicit non-automatic schedule type wins over one folded into an old combined name.
    """
    sampler, folded = split_sampler_name(sampler_name)
    schedule = find_schedule(schedule_name or AUTOMATIC)
    if schedule.name == AUTOMATIC:
        schedule = folded or find_schedule(sampler.default_schedule)
    return SamplerChoice(sampler, schedule)


def supported_schedules(sampler: SamplerSpec) -> tuple[str, ...]:
    """Schedule types the sampler's diffusers class accepts (checked on its constructor)."""
    params = inspect.signature(_scheduler_class(sampler.scheduler_class).__init__).parameters
    return tuple(s.name for s in SCHEDULES if all(k in params for k in s.kwargs))


def check_supported(choice: SamplerChoice) -> None:
    """Raise UnknownSamplerError, naming the valid ones, when the sampler cannot use the schedule type."""
    valid = supported_schedules(choice.sampler)
    if choice.schedule.name not in valid:
        raise UnknownSamplerError(f"schedule type for {choice.sampler.name}", choice.schedule.name, valid)


def build_scheduler(choice: SamplerChoice, base_config: Any, seeds: Optional[list[int]] = None) -> Any:
    """A fresh diffusers scheduler for one batch, from the model's own scheduler config.

    `seeds` (one per image) seed schedulers that draw their own noise (DPM++ SDE's Brownian
    tree), so that image i of a batch still matches a lone job with its seed.
    """
    check_supported(choice)
    cls = _scheduler_class(choice.sampler.scheduler_class)
    params = inspect.signature(cls.__init__).parameters
    # Schedule kwargs from other samplers must not leak in from the model's config.
    overrides: dict[str, Any] = {k: False for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
                                 if k in params}
    overrides.update(choice.sampler.kwargs)
    overrides.update(choice.schedule.kwargs)
    overrides.update({k: v for k, v in choice.schedule.optional_kwargs.items() if k in params})
    scheduler = cls.from_config(base_config, **overrides)
    if seeds is not None and hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = list(seeds)
    return scheduler


def _scheduler_class(name: str) -> type:
    import diffusers  # deferred: keeps this module importable without torch

    return getattr(diffusers, name)
