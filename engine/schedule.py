"""The noise schedule beta_1..beta_T and every coefficient derived from it.

All coefficients are computed once in float64 (products of a thousand numbers near 1 lose digits in float32) and
kept as float32 buffers that follow the module across devices. `extract` is the one gather helper used everywhere.

Indexing: the arrays have length T and index k holds the paper's step t = k + 1, as in the paper's own code, so the
network sees the integer k in [0, T). `alphas_cumprod_prev[0]` is alpha-bar_0 = 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import DiffusionConfig, ScheduleKind


def linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    """Ho et al. 2020, Sec. 4: betas increasing linearly from beta_1 to beta_T (float64)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, offset: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021, Eq. 17: alpha-bar_t = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=max_beta)  # clipped to avoid a singularity at t = T (their Sec. 3.2)


def make_betas(config: DiffusionConfig) -> Tensor:
    if config.schedule is ScheduleKind.LINEAR:
        return linear_betas(config.num_timesteps, config.beta_start, config.beta_end)
    if config.schedule is ScheduleKind.COSINE:
        return cosine_betas(config.num_timesteps)
    raise ValueError(f"unknown schedule {config.schedule}")


def extract(a: Tensor, t: Tensor, x_shape: torch.Size | tuple[int, ...]) -> Tensor:
    """a[t] reshaped to [N, 1, 1, ...] so it broadcasts against a batch of shape x_shape.

    a: [T] buffer; t: [N] long step indices in [0, T).
    """
    assert t.ndim == 1 and t.shape[0] == x_shape[0], (t.shape, x_shape)
    return a.gather(0, t).reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))


class NoiseSchedule(nn.Module):
    """Buffers of the forward process q and of the true posterior q(x_{t-1} | x_t, x_0).

    Names follow the paper's code: `alphas_cumprod` is alpha-bar_t, `posterior_variance` is beta~_t (Eq. 7).
    """

    def __init__(self, betas: Tensor):
        super().__init__()
        betas = betas.to(torch.float64)
        assert betas.ndim == 1 and bool(((betas > 0) & (betas < 1)).all()), "betas must lie in (0, 1)"
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)  # alpha-bar_t = prod_{s<=t} alpha_s
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])

        # Ho et al. 2020, Eq. 7: beta~_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) * beta_t
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        coefficients = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            # q(x_t | x_0), Eq. 4
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "one_minus_alphas_cumprod": 1.0 - alphas_cumprod,  # in float64: 1 - 0.9999 loses 4 digits in float32
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "log_one_minus_alphas_cumprod": torch.log(1.0 - alphas_cumprod),
            # x_0 from epsilon, Eq. 15 rearranged: x_0 = sqrt(1/a-bar) x_t - sqrt(1/a-bar - 1) eps
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
            # q(x_{t-1} | x_t, x_0), Eqs. 6-7
            "posterior_variance": posterior_variance,
            # beta~_1 = 0, so the log takes beta~_2 at t = 1 (the paper's code does the same)
            "posterior_log_variance_clipped": torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
            # sigma_t^2 = beta_t ("fixed large", Sec. 3.2), except beta~_2 at t = 1 as in the paper's code
            # (diffusion_utils_2.py), for a better decoder likelihood; sampling adds no noise at t = 1 either way.
            "fixed_large_variance": torch.cat([posterior_variance[1:2], betas[1:]]),
            "fixed_large_log_variance": torch.log(torch.cat([posterior_variance[1:2], betas[1:]])),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
            "signal_to_noise_ratio": alphas_cumprod / (1.0 - alphas_cumprod),  # SNR_t (the min-SNR loss option)
        }
        self.num_timesteps = int(betas.shape[0])
        # float64 host copies for per-step scalars (the strided sampler's coefficients, reports)
        self.betas_float64 = betas
        self.alphas_cumprod_float64 = alphas_cumprod
        for name, value in coefficients.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> NoiseSchedule:
        return cls(make_betas(config))

    def signal_to_noise(self) -> Tensor:
        """SNR(t) = alpha-bar_t / (1 - alpha-bar_t), float64 on the host."""
        return self.alphas_cumprod_float64 / (1.0 - self.alphas_cumprod_float64)

    def alpha_bar(self, t: int) -> float:
        """alpha-bar at the paper's step t in [0, T], float64; alpha-bar_0 = 1."""
        return 1.0 if t == 0 else float(self.alphas_cumprod_float64[t - 1])

    # Type hints for the buffers registered above (nn.Module resolves them through __getattr__).
    betas: Tensor
    signal_to_noise_ratio: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    one_minus_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    log_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    fixed_large_variance: Tensor
    fixed_large_log_variance: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor
