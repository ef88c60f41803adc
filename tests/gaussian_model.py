"""A closed-form epsilon-predictor: the Bayes-optimal one when every pixel of x_0 is N(mu, s^2).

For x_t = sqrt(a) x_0 + sqrt(1 - a) eps with x_0 ~ N(mu, s^2):
    E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a).
With it the reverse chain is linear-Gaussian, so its output distribution and the bound's terms have closed forms.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from engine.diffusion import GaussianDiffusion


class GaussianEps:
    def __init__(self, diffusion: GaussianDiffusion, mu: float, s: float):
        self.alphas_cumprod = diffusion.schedule.alphas_cumprod
        self.mu, self.s = mu, s

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        a = self.alphas_cumprod[t].reshape(-1, *((1,) * (x_t.ndim - 1)))
        return (1 - a).sqrt() * (x_t - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)


def discretize(x: Tensor) -> Tensor:
    """Snap to the 256-level grid in [-1, 1] that Eq. 13's decoder assumes."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def gaussian_data(n: int, shape: tuple[int, ...], mu: float, s: float, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return discretize(mu + s * torch.randn(n, *shape, generator=g))


def _x0_affine(a: float, mu: float, s: float) -> tuple[float, float]:
    """x^0 = p x_t + q for the Gaussian model at a-bar = a (Eq. 15 with E[eps | x_t])."""
    g = (1 - a) / (a * s**2 + 1 - a)  # sqrt(1 - a) eps = g (x_t - sqrt(a) mu)
    return (1 - g) / math.sqrt(a), g * mu


def sampler_moments(diffusion: GaussianDiffusion, mu: float, s: float) -> tuple[float, float]:
    """Exact mean and variance of x_0 from Algorithm 2 (unclipped) with the Gaussian model, by the linear recursion.

    x_{t-1} = c1 x^0 + c2 x_t + sigma_t z, and x^0 is affine in x_t, so x_{t-1} = A x_t + B + sigma_t z.
    """
    sch = diffusion.schedule
    ab = sch.alphas_cumprod_float64
    abp = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    betas = sch.betas_float64
    c1 = betas * abp.sqrt() / (1 - ab)
    c2 = (1 - abp) * (1 - betas).sqrt() / (1 - ab)
    post_var = betas * (1 - abp) / (1 - ab)
    small = diffusion.config.variance.value == "beta_tilde"
    mean, var = 0.0, 1.0
    for k in range(diffusion.num_timesteps - 1, -1, -1):
        p, q = _x0_affine(float(ab[k]), mu, s)
        A = float(c1[k]) * p + float(c2[k])
        B = float(c1[k]) * q
        sigma2 = 0.0 if k == 0 else float(post_var[k] if small else betas[k])
        mean, var = A * mean + B, A * A * var + sigma2
    return mean, var


def strided_moments(
    diffusion: GaussianDiffusion, timesteps: list[int], eta: float, mu: float, s: float
) -> tuple[float, float]:
    """The same for the strided (DDIM) sampler: x_s = sqrt(a_s) x^0 + sqrt(1 - a_s - sigma^2) eps + sigma z."""
    sch = diffusion.schedule
    mean, var = 0.0, 1.0
    for t, s_ in zip(timesteps[:-1], timesteps[1:]):
        a_t, a_s = sch.alpha_bar(t), sch.alpha_bar(s_)
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t)) * math.sqrt(1 - a_t / a_s)
        p, q = _x0_affine(a_t, mu, s)
        d = math.sqrt(max(0.0, 1 - a_s - sigma**2)) / math.sqrt(1 - a_t)  # eps = (x_t - sqrt(a_t) x^0) / sqrt(1 - a_t)
        A = math.sqrt(a_s) * p + d * (1 - math.sqrt(a_t) * p)
        B = math.sqrt(a_s) * q - d * math.sqrt(a_t) * q
        mean, var = A * mean + B, A * A * var + sigma**2
    return mean, var
