"""Samplers x schedule types (A1111 1.10): the sigma math, the real diffusers schedulers taking it,
and the real engine on the tiny model for every pair; eta and s_* applied and in infotext."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, UNet2DConditionModel
from pydantic import ValidationError

from modules.infotext import parse_infotext, request_fields_from_infotext
from modules.paths import Paths
from modules.processing import samplers, schedules
from modules.processing.conditioning import PromptEncoder, ScheduledConditioning
from modules.processing.engine import Engine
from modules.generation.request import GenerationRequest
from modules.processing.sampling import SamplingJob, denoise
from modules.processing.scheduler_classes import ScheduleInput, attach_schedule, scheduled_class
from modules.settings import SettingsStore
from tests.tiny_model import TEXT_DIM, FixedProvider, tiny_loaded_model

# SD 1.x training noise levels (scaled_linear 0.00085 .. 0.012, 1000 steps)
SD_CONFIG = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          num_train_timesteps=1000, clip_sample=False, steps_offset=1).config
SD = schedules.ModelSigmas.from_alphas_cumprod(DDPMScheduler.from_config(SD_CONFIG).alphas_cumprod.numpy())
SCHEDULE_TYPES = [s for s in samplers.SCHEDULES if s.function]


# ------------------------------------------------------------------ the sigma math

def test_model_sigmas_are_sd15s():
    assert SD.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert SD.sigma_max == pytest.approx(14.6146, abs=1e-4)
    t = np.array([0.0, 10.5, 500.25, 999.0])
    assert np.allclose(SD.sigma_to_t(SD.t_to_sigma(t)), t, atol=1e-6)


@pytest.mark.parametrize("spec", SCHEDULE_TYPES, ids=lambda s: s.api_name)
@pytest.mark.parametrize("n", [2, 3, 10, 25])
def test_every_schedule_starts_high_and_decreases(spec, n):
    sigmas = getattr(schedules, spec.function)(n, SD)
    assert np.isfinite(sigmas).all()
    assert np.all(np.diff(sigmas) < 0), sigmas
    assert sigmas[0] == pytest.approx(SD.sigma_max, rel=1e-3) or spec.api_name in ("simple", "ddim")
    if spec.api_name == "kl_optimal":  # A1111's KL Optimal stops at sigma_min
        assert len(sigmas) == n + 1 and sigmas[-1] == pytest.approx(SD.sigma_min)
    else:
        assert sigmas[-1] == 0.0
    if spec.api_name != "ddim":  # A1111's DDIM schedule can take a step more than asked
        assert len(sigmas) == n + 1


def test_karras_matches_its_formula():
    sigmas = schedules.karras(10, SD)
    assert sigmas[0] == pytest.approx(14.6146, abs=1e-4) and sigmas[-2] == pytest.approx(0.0292, abs=1e-4)
    mid = (SD.sigma_max ** (1 / 7) + (4 / 9) * (SD.sigma_min ** (1 / 7) - SD.sigma_max ** (1 / 7))) ** 7
    assert sigmas[4] == pytest.approx(mid)
    assert np.allclose(schedules.karras(5, SD, rho=1.0)[:-1], np.linspace(SD.sigma_max, SD.sigma_min, 5))


def test_exponential_and_polyexponential():
    exp = schedules.exponential(6, SD)[:-1]
    ratios = exp[1:] / exp[:-1]
    assert np.allclose(ratios, ratios[0])
    assert np.allclose(schedules.polyexponential(6, SD, rho=1.0), schedules.exponential(6, SD))


def test_align_your_steps_tables_and_log_linear_interpolation():
    assert np.allclose(schedules.align_your_steps(11, SD), [*schedules.AYS_SD15, 0.0])
    sdxl = schedules.ModelSigmas(SD.sigmas, is_sdxl=True)
    assert np.allclose(schedules.align_your_steps(11, sdxl), [*schedules.AYS_SDXL, 0.0])
    ten = schedules.align_your_steps(10, SD)
    assert len(ten) == 11 and ten[0] == pytest.approx(14.615) and ten[-2] == pytest.approx(0.029)
    # log-linear: the log of 10 points evenly placed over the table's 11 log values
    xs = np.linspace(0, 1, 11)
    expected = np.exp(np.interp(np.linspace(0, 1, 10), xs, np.log(schedules.AYS_SD15[::-1])))[::-1]
    assert np.allclose(ten[:-1], expected)
    assert ten[1] != pytest.approx(schedules.AYS_SD15[1])


def test_training_step_schedules_pick_training_sigmas():
    s = SD.sigmas
    assert np.allclose(schedules.simple(4, SD), [s[999], s[749], s[499], s[249], 0])
    assert np.allclose(schedules.ddim(4, SD), [s[751], s[501], s[251], s[1], 0])
    assert np.allclose(schedules.normal(4, SD), [s[999], s[666], s[333], s[0], 0])
    assert np.allclose(schedules.uniform(4, SD), schedules.normal(4, SD))
    assert np.allclose(schedules.sgm_uniform(4, SD)[:-1], SD.t_to_sigma([999, 749.25, 499.5, 249.75]))


def test_kl_optimal_and_beta_end_points():
    kl = schedules.kl_optimal(4, SD)
    assert kl[2] == pytest.approx(np.tan((np.arctan(SD.sigma_min) + np.arctan(SD.sigma_max)) / 2))
    beta = schedules.beta(5, SD)
    assert beta[0] == pytest.approx(SD.sigma_max) and beta[-2] == pytest.approx(SD.sigma_min)
    assert beta[2] == pytest.approx((SD.sigma_min + SD.sigma_max) / 2)  # the symmetric beta's median


# ------------------------------------------------------------------ the diffusers schedulers take the list

def _built(sampler: str, schedule: str, steps: int = 6):
    choice = samplers.resolve(sampler, schedule)
    scheduler = samplers.build_scheduler(choice, SD_CONFIG)
    scheduler.set_timesteps(steps, device="cpu")
    return choice, scheduler


@pytest.mark.parametrize("sampler", [s.name for s in samplers.SAMPLERS if s.uses_schedule])
@pytest.mark.parametrize("schedule", ["Karras", "Align Your Steps", "Simple", "Beta"])
def test_diffusers_scheduler_runs_on_the_schedules_sigmas(sampler, schedule):
    choice, scheduler = _built(sampler, schedule)
    want = samplers.sigma_function(choice, SD)(6)
    if scheduler.schedule_input is ScheduleInput.TIMESTEPS:  # whole training steps only
        assert scheduler.timesteps.tolist() == np.round(SD.sigma_to_t(want[:-1])).astype(int).tolist()
        return
    got = np.unique(scheduler.sigmas.numpy().astype(np.float64))
    for sigma in want:
        assert np.isclose(got, sigma, rtol=1e-4, atol=1e-6).any(), (sigma, got)


def test_samplers_that_ignore_the_schedule_type_as_in_a1111():
    _, karras = _built("DDIM", "Karras")
    _, uniform = _built("DDIM", "Uniform")
    assert karras.timesteps.tolist() == uniform.timesteps.tolist() == [831, 665, 499, 333, 167, 1]  # A1111: range(0, 1000, 1000 // 6) + 1
    _, fast = _built("DPM fast", "Karras")
    assert fast.sigmas[0].item() == pytest.approx(SD.sigma_max, rel=1e-4)
    assert fast.sigmas[-1].item() == pytest.approx(SD.sigma_min, rel=1e-4)


def test_automatic_is_a1111s_default_per_sampler():
    assert samplers.resolve("DPM++ 2M").schedule.name == "Karras"
    assert samplers.resolve("DPM++ 2M SDE Heun").schedule.name == "Exponential"
    assert samplers.resolve("Euler a").schedule.name == "Uniform"
    assert samplers.resolve("Restart", "automatic").schedule.name == "Karras"
    assert samplers.resolve("Euler a", "align_your_steps").schedule.name == "Align Your Steps"
    assert samplers.resolve("Euler", "SGMUniform").schedule.name == "SGM Uniform"


def _one_step(cls, seed: int = 3, **kwargs) -> torch.Tensor:
    """One step from step 1 on a fresh scheduler (a used one keeps its step index)."""
    scheduler = scheduled_class(cls).from_config(SD_CONFIG, timestep_spacing="linspace")
    attach_schedule(scheduler, None)
    if cls is not EulerAncestralDiscreteScheduler:
        scheduler = cls.from_config(scheduler.config)
    scheduler.set_timesteps(5)
    scheduler.set_begin_index(1)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * scheduler.sigmas[1]
    pred = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(seed)
    return scheduler.step(pred, scheduler.timesteps[1], sample, generator=generator, **kwargs).prev_sample


def test_euler_a_eta_1_is_diffusers_step_and_eta_0_is_euler():
    stock = EulerAncestralDiscreteScheduler.from_config(SD_CONFIG, timestep_spacing="linspace")
    stock.set_timesteps(5)
    stock.set_begin_index(1)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * stock.sigmas[1]
    pred = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    diffusers_step = stock.step(pred, stock.timesteps[1], sample, generator=torch.Generator().manual_seed(3)).prev_sample
    assert torch.allclose(_one_step(EulerAncestralDiscreteScheduler, eta=1.0), diffusers_step, atol=1e-5)
    assert torch.allclose(_one_step(EulerAncestralDiscreteScheduler, eta=0.0), _one_step(EulerDiscreteScheduler),
                          atol=1e-5)
    assert not torch.allclose(_one_step(EulerAncestralDiscreteScheduler, eta=0.5), diffusers_step, atol=1e-3)


def test_step_options_follow_a1111():
    euler_a = samplers.resolve("Euler a").sampler
    default = samplers.step_options(euler_a, samplers.SamplerParams())
    assert default.kwargs == {"eta": 1.0} and default.infotext == {} and not default.warnings
    assert samplers.step_options(euler_a, samplers.SamplerParams(eta=0.5)).infotext == {"Eta": 0.5}
    assert samplers.step_options(euler_a, samplers.SamplerParams(), eta_ancestral=0.7).infotext == {"Eta": 0.7}
    ddim = samplers.step_options(samplers.resolve("DDIM").sampler, samplers.SamplerParams(eta=0.3))
    assert ddim.kwargs == {"eta": 0.3} and ddim.infotext == {"Eta DDIM": 0.3}
    euler = samplers.step_options(samplers.resolve("Euler").sampler, samplers.SamplerParams(s_churn=2, s_tmax=0))
    assert euler.kwargs == {"s_churn": 2, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
    assert euler.infotext == {"Sigma churn": 2}
    heun = samplers.step_options(samplers.resolve("Heun").sampler, samplers.SamplerParams(s_churn=2))
    assert heun.kwargs == {} and "s_churn" in heun.warnings[0] and "cannot apply" in heun.warnings[0]


def test_request_validates_the_ranges():
    for field, bad in (("eta", 1.5), ("s_churn", -1), ("s_tmin", 11), ("s_tmax", 1000), ("s_noise", 2)):
        with pytest.raises(ValidationError, match=field):
            GenerationRequest(**{field: bad})


# ------------------------------------------------------------------ the real engine, every pair

@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(FixedProvider(tiny_loaded_model(seed=0)), SettingsStore(None),
                  Paths(data_dir=tmp_path_factory.mktemp("samplers")))


def job(**fields) -> GenerationRequest:
    base = dict(prompt="a red circle", seed=77, steps=3, sampler_name="Euler a", save_images=False, cfg_scale=5.0)
    return GenerationRequest(**{**base, **fields})


def px(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def bare_unet():
    """A one-level UNet: every sampler x schedule pair runs through the real loop in milliseconds."""
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8,), down_block_types=("DownBlock2D",),
                                up_block_types=("UpBlock2D",), cross_attention_dim=TEXT_DIM,
                                norm_num_groups=4).eval()


@pytest.fixture(scope="module")
def encoder():
    return PromptEncoder.from_model(tiny_loaded_model(seed=0))


@pytest.mark.parametrize("schedule", samplers.SCHEDULE_NAMES)
@pytest.mark.parametrize("sampler", samplers.SAMPLER_NAMES)
def test_every_sampler_with_every_schedule_type_denoises(bare_unet, encoder, sampler, schedule):
    choice = samplers.resolve(sampler, schedule)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    job = SamplingJob(unet=bare_unet, device=torch.device("cpu"), scheduler=samplers.build_scheduler(choice, SD_CONFIG),
                      cond=ScheduledConditioning(encoder, ["a red circle"], 3),
                      uncond=ScheduledConditioning(encoder, [""], 3), cfg_scale=5.0, steps=3, noise=noise,
                      generators=[torch.Generator().manual_seed(5)],
                      step_options=samplers.step_options(choice.sampler, samplers.SamplerParams()).kwargs)
    with torch.inference_mode():
        outcome = denoise(job, lambda *a: None, lambda: False)
    assert outcome.steps_done == outcome.total_steps >= 3
    assert torch.isfinite(outcome.latents).all() and outcome.latents.std() > 0
    assert not torch.allclose(outcome.latents, noise * job.scheduler.init_noise_sigma)


@pytest.mark.parametrize("sampler", samplers.SAMPLER_NAMES)
def test_every_sampler_with_karras_through_the_engine(engine, sampler):
    result = engine.generate(job(sampler_name=sampler, scheduler="Karras"))
    assert px(result).std() > 0 and result.sampler_name == sampler and result.scheduler == "Karras"


@pytest.mark.parametrize("schedule", samplers.SCHEDULE_NAMES)
def test_every_schedule_type_through_the_engine(engine, schedule):
    result = engine.generate(job(sampler_name="Euler a", scheduler=schedule))
    assert px(result).std() > 0
    assert result.scheduler == ("Uniform" if schedule == "Automatic" else schedule)


def test_euler_a_with_karras_is_karras(engine):
    karras = engine.generate(job(sampler_name="Euler a", scheduler="Karras"))
    uniform = engine.generate(job(sampler_name="Euler a", scheduler="Uniform"))
    assert "Schedule type: Karras" in karras.infotexts[0]
    assert not np.array_equal(px(karras), px(uniform))


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM"])
def test_eta_changes_the_result_and_its_default_equals_not_sending_it(engine, sampler):
    unsent = engine.generate(job(sampler_name=sampler, steps=4))
    default = engine.generate(job(sampler_name=sampler, steps=4, eta=1.0 if sampler == "Euler a" else 0.0))
    other = engine.generate(job(sampler_name=sampler, steps=4, eta=0.4))
    assert np.array_equal(px(unsent), px(default))
    assert not np.array_equal(px(unsent), px(other))
    assert unsent.infotexts[0] == default.infotexts[0]
    key = "Eta" if sampler == "Euler a" else "Eta DDIM"
    assert parse_infotext(other.infotexts[0]).params[key] == "0.4"
    assert key not in parse_infotext(unsent.infotexts[0]).params


def test_s_churn_changes_eulers_result(engine):
    plain = engine.generate(job(sampler_name="Euler", steps=4))
    zero = engine.generate(job(sampler_name="Euler", steps=4, s_churn=0.0))
    churned = engine.generate(job(sampler_name="Euler", steps=4, s_churn=5.0))
    assert np.array_equal(px(plain), px(zero))
    assert not np.array_equal(px(plain), px(churned))
    assert "Sigma churn" not in plain.infotexts[0] and not churned.warnings


def test_sampler_params_a_sampler_cannot_apply_are_reported(engine):
    result = engine.generate(job(sampler_name="Heun", s_churn=1.0))
    assert any("s_churn not applied: Heun" in w for w in result.warnings)
    assert "Sigma churn" not in result.infotexts[0]


@pytest.mark.parametrize("fields", [dict(sampler_name="Euler a", eta=0.25),
                                    dict(sampler_name="DDIM", eta=0.5),
                                    dict(sampler_name="Euler", s_churn=3.0, s_tmin=0.5, s_tmax=9.0, s_noise=0.9)])
def test_infotext_round_trip_of_sampler_params(engine, fields):
    first = engine.generate(job(**fields))
    parsed = request_fields_from_infotext(first.infotexts[0], strict=True)
    for name, value in fields.items():
        assert parsed[name] == value
    again = engine.generate(GenerationRequest(**{k: v for k, v in parsed.items() if k != "checkpoint"},
                                              save_images=False))
    assert again.infotexts[0] == first.infotexts[0]
    assert np.array_equal(px(first), px(again))
