"""A1111 1.10's schedule types as sigma lists: the math of its modules/sd_schedulers.py.

Pure numpy over the model's training noise levels (`alphas_cumprod`), so every function can be
checked against A1111's formulas without a model. Each returns the sigmas to visit, highest
first, ending with the value the last step lands on (0, except KL Optimal which ends at the
model's smallest sigma, as in A1111).

`sigma_to_t` / `t_to_sigma` follow k-diffusion's DiscreteSchedule: they interpolate log sigma
linearly between training timesteps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Align Your Steps tables (NVIDIA, 10 steps), as A1111 ships them.
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)

BETA_ALPHA = BETA_BETA = 0.6  # A1111's beta_dist_alpha / beta_dist_beta defaults


@dataclass(frozen=True)
class ModelSigmas:
    """The training noise levels of one model, ascending with the timestep."""

    sigmas: np.ndarray  # float64, [num_train_timesteps]
    is_sdxl: bool = False

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod, is_sdxl: bool = False) -> "ModelSigmas":
        ac = np.asarray(alphas_cumprod, dtype=np.float64)
        return cls(np.sqrt((1 - ac) / ac), is_sdxl)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def log_sigmas(self) -> np.ndarray:
        return np.log(self.sigmas)

    def sigma_to_t(self, sigma) -> np.ndarray:
        log_sigmas = self.log_sigmas
        log_sigma = np.log(np.atleast_1d(np.asarray(sigma, dtype=np.float64)))
        dists = log_sigma[:, None] - log_sigmas[None, :]
        low = np.clip(np.cumsum(dists >= 0, axis=1).argmax(axis=1), 0, len(log_sigmas) - 2)
        high = low + 1
        w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
        return (1 - w) * low + w * high

    def t_to_sigma(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        low, high = np.floor(t).astype(int), np.ceil(t).astype(int)
        w = t - low
        log_sigmas = self.log_sigmas
        return np.exp((1 - w) * log_sigmas[low] + w * log_sigmas[high])


def _zero(values) -> np.ndarray:
    return np.append(np.asarray(values, dtype=np.float64), 0.0)


def uniform(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    """k-diffusion's get_sigmas: timesteps evenly spaced from the last training step to 0."""
    return _zero(m.t_to_sigma(np.linspace(len(m.sigmas) - 1, 0, n)))


def sgm_uniform(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    t = np.linspace(m.sigma_to_t(m.sigma_max)[0], m.sigma_to_t(m.sigma_min)[0], n + 1)[:-1]
    return _zero(m.t_to_sigma(t))


def karras(n: int, m: ModelSigmas, rho: float = 7.0) -> np.ndarray:
    ramp = np.linspace(0, 1, n)
    lo, hi = m.sigma_min ** (1 / rho), m.sigma_max ** (1 / rho)
    return _zero((hi + ramp * (lo - hi)) ** rho)


def exponential(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    return _zero(np.exp(np.linspace(np.log(m.sigma_max), np.log(m.sigma_min), n)))


def polyexponential(n: int, m: ModelSigmas, rho: float = 1.0) -> np.ndarray:
    ramp = np.linspace(1, 0, n) ** rho
    log_min, log_max = np.log(m.sigma_min), np.log(m.sigma_max)
    return _zero(np.exp(ramp * (log_max - log_min) + log_min))


def kl_optimal(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    """n + 1 values ending at sigma_min (A1111 does not append a zero here)."""
    a_min, a_max = np.arctan(m.sigma_min), np.arctan(m.sigma_max)
    i = np.arange(n + 1) / n
    return np.tan(i * a_min + (1 - i) * a_max)


def _loglinear_interp(values, num: int) -> np.ndarray:
    xs = np.linspace(0, 1, len(values))
    ys = np.log(np.asarray(values, dtype=np.float64)[::-1])
    return np.exp(np.interp(np.linspace(0, 1, num), xs, ys))[::-1].copy()


def align_your_steps(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    table = AYS_SDXL if m.is_sdxl else AYS_SD15
    if n == len(table):
        return _zero(table)
    return _zero(_loglinear_interp(table, n))


def simple(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    stride = len(m.sigmas) / n
    return _zero([m.sigmas[-(1 + int(x * stride))] for x in range(n)])


def normal(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    t = np.linspace(m.sigma_to_t(m.sigma_max)[0], m.sigma_to_t(m.sigma_min)[0], n)
    return _zero(m.t_to_sigma(t))


def ddim(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    """Every `len // n`-th training sigma from index 1 up; like A1111 it can give a step more than n."""
    stride = max(len(m.sigmas) // n, 1)
    return _zero(m.sigmas[1::stride][::-1])


def beta(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    from scipy import stats  # deferred: only this schedule needs it

    ts = stats.beta.ppf(1 - np.linspace(0, 1, n), BETA_ALPHA, BETA_BETA)
    return _zero(m.sigma_min + ts * (m.sigma_max - m.sigma_min))


def dpm_solver_log_snr(n: int, m: ModelSigmas, rho: float = 0.0) -> np.ndarray:
    """DPM-Solver's own grid (k-diffusion dpm_fast / dpm_adaptive): uniform in log-SNR from
    sigma_max down to sigma_min, n + 1 values; those samplers take no sigma list in A1111."""
    return np.exp(np.linspace(np.log(m.sigma_max), np.log(m.sigma_min), n + 1))


def discard_penultimate(sigmas: np.ndarray) -> np.ndarray:
    """A1111's discard_next_to_last_sigma (DPM2, DPM2 a, DPM++ 3M SDE)."""
    return np.concatenate([sigmas[:-2], sigmas[-1:]])
