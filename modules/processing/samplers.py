"""A1111 sampler and schedule-type names as data, mapped onto diffusers schedulers.

Torch-free at import: the UI and API list names from here; diffusers is imported only when a
scheduler is built. Every job builds a fresh scheduler with `from_config`, so no job sees
another's scheduler state.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class SamplerSpec:
    name: str  # A1111's label
    scheduler_class: str  # diffusers class name
    kwargs: dict[str, Any] = field(default_factory=dict)
    default_schedule: str = "Uniform"  # what "Automatic" means for this sampler, as in A1111 1.10
    aliases: tuple[str, ...] = ()
    note: str = ""  # where the diffusers scheduler only approximates A1111's sampler
    eta: str = ""  # "ancestral" / "ddim": the step applies `eta` (A1111's option eta_ancestral / eta_ddim)
    churn: bool = False  # the step applies s_churn, s_tmin, s_tmax, s_noise (k-diffusion's Euler churn)
    a1111_params: tuple[str, ...] = ()  # parameters A1111's sampler takes that diffusers' cannot apply
    discard_penultimate: bool = False  # A1111's discard_next_to_last_sigma
    # A1111's timestep samplers (DDIM, PLMS) and DPM fast / adaptive take no sigma list, so the
    # schedule type changes nothing for them; `own_sigmas` names the grid those two use.
    uses_schedule: bool = True
    own_sigmas: str = ""


@dataclass(frozen=True)
class ScheduleSpec:
    name: str  # A1111's label
    api_name: str  # A1111's /sdapi/v1/schedulers name
    function: str = ""  # its function in schedules.py; "" for Automatic
    default_rho: float = -1.0
    need_inner_model: bool = False
    aliases: tuple[str, ...] = ()


_ETA = ("eta",)
_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                "Karras", ("k_dpmpp_2m",)),
    SamplerSpec("DPM++ SDE", "DPMSolverSDEScheduler", {}, "Karras", ("k_dpmpp_sde",), a1111_params=_ETA),
    SamplerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                "Exponential", ("k_dpmpp_2m_sde",), a1111_params=_ETA),
    SamplerSpec("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
                "Exponential", ("k_dpmpp_2m_sde_heun",), a1111_params=_ETA),
    SamplerSpec("DPM++ 2S a", "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                "Karras", ("k_dpmpp_2s_a",), a1111_params=_ETA,
                note="diffusers has no ancestral single-step DPM++; its 2nd-order single-step solver is used"),
    SamplerSpec("DPM++ 3M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                "Exponential", ("k_dpmpp_3m_sde",), a1111_params=_ETA, discard_penultimate=True,
                note="diffusers' 3rd-order SDE DPM-Solver++ multistep, the closest match to k-diffusion's 3M SDE"),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", {}, "Uniform", ("k_euler_a", "k_euler_ancestral"),
                eta="ancestral"),
    SamplerSpec("Euler", "EulerDiscreteScheduler", {}, "Uniform", ("k_euler",), churn=True),
    SamplerSpec("LMS", "LMSDiscreteScheduler", {}, "Uniform", ("k_lms",)),
    SamplerSpec("Heun", "HeunDiscreteScheduler", {}, "Uniform", ("k_heun",), a1111_params=_CHURN),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", {}, "Karras", ("k_dpm_2",), a1111_params=_CHURN,
                discard_penultimate=True),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, "Karras", ("k_dpm_2_a",), a1111_params=_ETA,
                discard_penultimate=True),
    SamplerSpec("DPM fast", "DPMSolverSinglestepScheduler",
                {"algorithm_type": "dpmsolver", "solver_order": 3, "final_sigmas_type": "sigma_min"},
                "Uniform", ("k_dpm_fast",), a1111_params=_ETA, uses_schedule=False, own_sigmas="dpm_solver_log_snr",
                note="diffusers' single-step DPM-Solver-3 on DPM-Solver's log-SNR grid with `steps` model calls; "
                     "k-diffusion's DPM-Solver-fast spaces its order-3 steps differently"),
    SamplerSpec("DPM adaptive", "DPMSolverSinglestepScheduler",
                {"algorithm_type": "dpmsolver", "solver_order": 3, "final_sigmas_type": "sigma_min"},
                "Uniform", ("k_dpm_ad",), a1111_params=_ETA, uses_schedule=False, own_sigmas="dpm_solver_log_snr",
                note="diffusers has no error-controlled adaptive DPM-Solver; runs DPM fast's fixed plan "
                     "with `steps` model calls instead of choosing its own step count"),
    SamplerSpec("Restart", "HeunDiscreteScheduler", {}, "Karras", ("restart",),
                note="diffusers has no Restart sampler; runs its Heun steps on the schedule without "
                     "Restart's noise re-injection cycles"),
    SamplerSpec("DDIM", "DDIMScheduler", {}, "Uniform", ("ddim",), eta="ddim", uses_schedule=False),
    SamplerSpec("DDIM CFG++", "DDIMScheduler", {}, "Uniform", ("ddim_cfgpp",), eta="ddim", uses_schedule=False,
                note="CFG++ steps along the unconditional noise with CFG/12.5, which the diffusers DDIM step cannot "
                     "take; runs DDIM with regular CFG"),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, "Uniform", ("plms", "pndm"), uses_schedule=False),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", {}, "Uniform", ("unipc",)),
    SamplerSpec("LCM", "LCMScheduler", {}, "Uniform", ("lcm", "k_lcm"),
                note="diffusers' LCM scheduler steps on whole training timesteps: the schedule's sigmas are "
                     "rounded to the nearest one"),
    SamplerSpec("DDPM", "DDPMScheduler", {}, "Uniform", ("ddpm",),
                note="diffusers' DDPM scheduler steps on whole training timesteps: the schedule's sigmas are "
                     "rounded to the nearest one"),
)

AUTOMATIC = "Automatic"
# A1111 1.10's modules/sd_schedulers.py, in its order
SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec(AUTOMATIC, "automatic"),
    ScheduleSpec("Uniform", "uniform", "uniform", need_inner_model=True),
    ScheduleSpec("Karras", "karras", "karras", default_rho=7.0),
    ScheduleSpec("Exponential", "exponential", "exponential"),
    ScheduleSpec("Polyexponential", "polyexponential", "polyexponential", default_rho=1.0),
    ScheduleSpec("SGM Uniform", "sgm_uniform", "sgm_uniform", need_inner_model=True, aliases=("SGMUniform",)),
    ScheduleSpec("KL Optimal", "kl_optimal", "kl_optimal"),
    ScheduleSpec("Align Your Steps", "align_your_steps", "align_your_steps"),
    ScheduleSpec("Simple", "simple", "simple", need_inner_model=True),
    ScheduleSpec("Normal", "normal", "normal", need_inner_model=True),
    ScheduleSpec("DDIM", "ddim", "ddim", need_inner_model=True),
    ScheduleSpec("Beta", "beta", "beta", need_inner_model=True),
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
_SCHEDULE_LOOKUP = {_key(a): s for s in SCHEDULES for a in (s.name, s.api_name, *s.aliases)}


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


def sigma_function(choice: SamplerChoice, model_sigmas: Any) -> Optional[Callable[[int], Any]]:
    """steps -> the sigma list this sampler runs on (numpy), or None where the class keeps its own
    timesteps. `model_sigmas` is a schedules.ModelSigmas."""
    from modules.processing import schedules  # numpy only

    name = choice.sampler.own_sigmas or (choice.schedule.function if choice.sampler.uses_schedule else "")
    if not name:
        return None
    function = getattr(schedules, name)
    discard = choice.sampler.discard_penultimate

    def sigmas(steps: int):
        if discard:
            return schedules.discard_penultimate(function(steps + 1, model_sigmas))
        return function(steps, model_sigmas)

    return sigmas


# classes whose final_sigmas_type="sigma_min" appends the model's smallest sigma
_FINAL_SIGMA_IS_MODEL_MIN = ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler")


def build_scheduler(choice: SamplerChoice, base_config: Any, seeds: Optional[list[int]] = None,
                    is_sdxl: bool = False) -> Any:
    """A fresh diffusers scheduler for one batch, from the model's own scheduler config, running
    on the schedule type's sigma list (see scheduler_classes for how each class takes it).

    `seeds` (one per image) seed schedulers that draw their own noise (DPM++ SDE's Brownian
    tree), so that image i of a batch still matches a lone job with its seed.
    """
    from modules.processing import scheduler_classes  # deferred: imports torch and diffusers

    base = _scheduler_class(choice.sampler.scheduler_class)
    cls = scheduler_classes.scheduled_class(base)
    params = inspect.signature(base.__init__).parameters
    # Schedule kwargs from other samplers must not leak in from the model's config.
    overrides: dict[str, Any] = {k: False for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                                                    "use_lu_lambdas", "use_flow_sigmas") if k in params}
    overrides.update(choice.sampler.kwargs)
    if cls.schedule_input is scheduler_classes.ScheduleInput.KARRAS_HOOK:
        overrides["use_karras_sigmas"] = True  # the hook our sigma list goes through
    if "timestep_spacing" in params and cls.schedule_input is not scheduler_classes.ScheduleInput.NONE:
        overrides["timestep_spacing"] = "linspace"  # k-diffusion's first step starts at sigma_max, not above
    scheduler = cls.from_config(base_config, **overrides)
    model_sigmas = scheduler_classes.ModelSigmas.from_alphas_cumprod(scheduler.alphas_cumprod.numpy(), is_sdxl)
    sigmas = sigma_function(choice, model_sigmas)
    if sigmas is not None and sigmas(2)[-1] > 0 and base.__name__ in _FINAL_SIGMA_IS_MODEL_MIN:
        # KL Optimal ends at the model's smallest sigma, not at 0 (elsewhere the last step goes to 0)
        scheduler = cls.from_config(scheduler.config, final_sigmas_type="sigma_min")
    scheduler_classes.attach_schedule(scheduler, sigmas)
    if seeds is not None and hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = list(seeds)
    return scheduler


# --------------------------------------------------------------------------- step parameters

ETA_INFOTEXT = {"ancestral": ("Eta", 1.0), "ddim": ("Eta DDIM", 0.0)}  # A1111's key and fixed default
CHURN_DEFAULTS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0}  # s_tmax 0 = infinity
CHURN_INFOTEXT = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}
INFOTEXT_TO_FIELD = {"Eta": "eta", "Eta DDIM": "eta", **{v: k for k, v in CHURN_INFOTEXT.items()}}


@dataclass(frozen=True)
class SamplerParams:
    """A1111's eta and s_* values for one job; None means the setting's (or k-diffusion's) default."""

    eta: Optional[float] = None
    s_churn: Optional[float] = None
    s_tmin: Optional[float] = None
    s_tmax: Optional[float] = None
    s_noise: Optional[float] = None


@dataclass(frozen=True)
class StepOptions:
    kwargs: dict[str, float]  # passed to scheduler.step
    infotext: dict[str, float]  # written where A1111 writes them: only values off the default
    warnings: tuple[str, ...]  # values sent that this sampler cannot apply


def step_options(sampler: SamplerSpec, params: SamplerParams, eta_ancestral: float = 1.0,
                 eta_ddim: float = 0.0) -> StepOptions:
    """Resolve eta and s_* for one sampler as A1111's Sampler.initialize does."""
    kwargs: dict[str, float] = {}
    infotext: dict[str, float] = {}
    ignored = []
    if sampler.eta:
        value = params.eta if params.eta is not None else (eta_ancestral if sampler.eta == "ancestral" else eta_ddim)
        kwargs["eta"] = value
        key, default = ETA_INFOTEXT[sampler.eta]
        if value != default:
            infotext[key] = value
    elif params.eta is not None:
        ignored.append("eta")
    for name, default in CHURN_DEFAULTS.items():
        value = getattr(params, name)
        if not sampler.churn:
            if value is not None:
                ignored.append(name)
            continue
        value = default if value is None else value
        kwargs[name] = float("inf") if name == "s_tmax" and value == 0 else value
        if value != default:
            infotext[CHURN_INFOTEXT[name]] = value
    warnings = ()
    if ignored:
        why = ("diffusers' scheduler for it cannot apply them" if set(ignored) & set(sampler.a1111_params)
               else "it does not take them in A1111 either")
        warnings = (f"{', '.join(ignored)} not applied: {sampler.name} ({why})",)
    return StepOptions(kwargs=kwargs, infotext=infotext, warnings=warnings)


def _scheduler_class(name: str) -> type:
    import diffusers  # deferred: keeps this module importable without torch

    return getattr(diffusers, name)
